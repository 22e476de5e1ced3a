# The sidecar image: the ext_proc workers only. Envoy runs from its own official image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY extproc ./extproc
# xds-protos ships an old opentelemetry/proto that may overwrite the real one: reinstall it.
RUN pip install --no-cache-dir . \
 && pip install --no-cache-dir --force-reinstall --no-deps \
      "opentelemetry-proto==$(python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')" \
 && useradd --system --uid 10001 gateway
USER gateway
EXPOSE 1063 1064
ENTRYPOINT ["ai-gateway"]
CMD ["serve", "-c", "/etc/ai-gateway/gateway.yaml"]
