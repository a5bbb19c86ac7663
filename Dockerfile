# One image for the four services; the command picks which one runs:
#   docker run IMAGE watcher|validator|launcher|collector   (and `health` for probes)
# BASE is any Debian bookworm image with Python >= 3.11 and venv: the official Python image
# by default; the lab, which reaches no public image registry, builds its own from Debian's
# packages (lab/docker/images.sh). Slurm's client commands come from the same Debian release
# as the lab's Slurm (22.05); a site on another Slurm release installs its own client here
# (build argument SLURM_CLIENT_PACKAGES). Why the services run as root with a few
# capabilities rather than as another user: docs/deploy.md.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG SLURM_CLIENT_PACKAGES="slurm-client"
# util-linux: setpriv and prlimit, with which the validator submits as the file's owner.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ${SLURM_CLIENT_PACKAGES} util-linux ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first, so a code change does not download them again.
WORKDIR /opt/slurm-k8s/src
COPY pyproject.toml ./
RUN python3 -m venv /opt/slurm-k8s/venv \
 && /opt/slurm-k8s/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      $(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))')
COPY shared ./shared
COPY services ./services
RUN /opt/slurm-k8s/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && rm -rf /opt/slurm-k8s/src
COPY deploy/docker/entrypoint.sh /usr/local/bin/slurm-k8s-entrypoint

WORKDIR /
ENV PATH=/opt/slurm-k8s/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/slurm-k8s-entrypoint"]
CMD ["help"]
LABEL org.opencontainers.image.title="slurm-k8s services" \
      org.opencontainers.image.description="watcher, validator, launcher, collector: the command picks one"
