# One image for every service: `shop run NAME` starts one service, `shop up` (the default)
# starts NATS in-process plus every service. docker-compose.yml runs one container per service.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    LOG_FORMAT=json \
    DATA_DIR=/data

# Services run unprivileged. /data is only written by `shop up` (its embedded NATS store);
# it is created here, owned by that user, so a volume mounted there starts writable.
RUN useradd --system --create-home --uid 10001 shop \
 && mkdir /data && chown shop:shop /data

# Only what the package is built from (README.md is the project's readme in pyproject.toml).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY libs/ libs/
COPY services/ services/
COPY shop/ shop/
# A regular (not editable) install, then the sources go: site-packages is the only copy, so
# `shop` and `python -m shop` (how `shop up` starts each service) run the same code.
RUN pip install --no-cache-dir . \
 && rm -rf /src

WORKDIR /home/shop
USER shop

ENTRYPOINT ["shop"]
CMD ["up"]
