# The sidecar image: the ext_proc workers only. Envoy runs from its own official image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY extproc ./extproc
RUN pip install --no-cache-dir . && useradd --system --uid 10001 gateway
USER gateway
EXPOSE 1063 1064
ENTRYPOINT ["ai-gateway"]
CMD ["serve", "-c", "/etc/ai-gateway/gateway.yaml"]
