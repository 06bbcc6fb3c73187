# token-projector's image: `docker build -t token-projector:0.2.0 .`
# Build stage: install the package and its dependencies from the project's own metadata into a venv.
# Pinned base: an exact Python patch release on Debian bookworm (pin its digest in your registry mirror).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook/ webhook/
# The workload library too: `token-projector proxy` (the verifying sidecar) is built on it; with its
# `offline` extra (PyJWT) for `--verification offline`.
COPY audience_token/ audience_token/
# Every dependency ships binary wheels for linux/amd64 and arm64: no compiler is needed, none is installed.
# Byte-code is compiled here because the root filesystem is read-only at run time; pip itself is removed.
RUN python -m venv /opt/token-projector \
 && /opt/token-projector/bin/pip install --no-cache-dir . './audience_token[offline]' \
 && /opt/token-projector/bin/python -m compileall -q /opt/token-projector \
 && /opt/token-projector/bin/pip uninstall --yes pip

# Final stage: the base image and the venv, nothing else (no sources, caches or build tools).
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/token-projector /opt/token-projector
ENV PATH=/opt/token-projector/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOKEN_PROJECTOR_CERT_FILE=/etc/token-projector/tls/tls.crt \
    TOKEN_PROJECTOR_KEY_FILE=/etc/token-projector/tls/tls.key
# A fixed non-root UID/GID (the "nonroot" convention), matching the Deployment's runAsUser.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["token-projector", "serve"]
