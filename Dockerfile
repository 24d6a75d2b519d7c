# One small image for every process: web, worker, beat, flower (see Procfile and
# docker-compose.prod.yml for the commands). Build: docker build -t claw-tasks .
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock setup.cfg pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
# Every dependency at its version in requirements.lock, the set the suite ran against
# (workers/runtime/internals.py relies on private Celery/kombu API of exactly those releases).
# A constraint, not `-r`: the lock also pins the test tools, which stay out of the image.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.lock .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
WORKDIR /app
USER 10001:10001
EXPOSE 8000 5555
# Overridden per service; the gateway is the default.
CMD ["python", "-m", "service"]
