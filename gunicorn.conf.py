# Read by gunicorn from the directory it starts in (`pipeline up`, the Docker image, tests):
# the viewer's production settings, so `gunicorn -k gevent 'viewer:create_app()'` gets them too.

# Every open MJPEG client holds one connection for as long as it watches, so the gevent
# worker's default of 1,000 is a viewer limit, not only a defence: 4,000 per worker, of which
# request bodies may hold only MAX_BODIES_IN_PROGRESS (viewer/bodies.py). Each connection is a
# file descriptor: the process needs `ulimit -n` above this.
worker_connections = 4000

# Seconds an idle keep-alive connection stays open: above deploy/nginx.conf's upstream
# keepalive_timeout (4 s), so nginx always closes an idle connection first and never reuses one
# the viewer is closing.
keepalive = 5
