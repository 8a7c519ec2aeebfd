#!/usr/bin/env bash
# xml_curl directory lookups under concurrent load: patchbay's endpoint (release build, started
# with `patchbay run`) against nginx (Debian package) serving the same XML document as a static
# file, in the same run, with the same wrk POST (the REGISTER lookup FreeSWITCH 1.10.12 sent).
#
#   benches/xml_curl/run.sh                      # wrk -t1 -c32 -d10s, 2 alternating rounds
#   THREADS=2 CONNECTIONS=64 DURATION=20s ROUNDS=3 benches/xml_curl/run.sh
#
# Targets (issue 2): patchbay >= 50% of nginx's requests/s, p99 <= 1.5x nginx's.
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
BENCH_DIR=$PWD/benches/xml_curl

install_if_missing() {
    local command=$1 package=$2
    if ! command -v "$command" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$command" ]; then
        echo "installing $package" >&2
        apt-get install -y "$package" >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y "$package" >/dev/null; }
    fi
}
install_if_missing wrk wrk
install_if_missing nginx nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet --bin patchbay

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {
    for _ in $(seq 100); do
        if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
        sleep 0.05
    done
    echo "nothing listening on port $1" >&2
    exit 1
}

patchbay_port=$(free_port)
nginx_port=$(free_port)
cat >"$work/settings.json" <<JSON
{
    "device_count": 10,
    "device_password": "password",
    "journal": "$work/journal.log",
    "freeswitch": { "xml": { "listen": "127.0.0.1:$patchbay_port" } }
}
JSON
PATCHBAY_LOG=error target/release/patchbay run --settings "$work/settings.json" &
pids+=($!)
wait_for "$patchbay_port"

# nginx serves the very bytes patchbay answers, from a file.
mkdir -p "$work/www" "$work/nginx"
# nginx workers run as an unprivileged user; mktemp made the folder private.
chmod 755 "$work" "$work/www"
curl -s --data-binary "@$BENCH_DIR/register-1000.body" \
    -H 'Content-Type: application/x-www-form-urlencoded' \
    "http://127.0.0.1:$patchbay_port/freeswitch" >"$work/www/freeswitch"
chmod 644 "$work/www/freeswitch"
grep -q 'value="password1000"' "$work/www/freeswitch" || { echo "patchbay answered no directory" >&2; exit 1; }
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/www;
        default_type text/xml;
        # The static module refuses POST with 405; serve the file anyway, as a GET would.
        location / { error_page 405 =200 \$uri; }
    }
}
CONF
"$NGINX" -c "$work/nginx.conf" -p "$work/nginx" &
pids+=($!)
wait_for "$nginx_port"
nginx_answer=$(curl -s --data-binary "@$BENCH_DIR/register-1000.body" "http://127.0.0.1:$nginx_port/freeswitch")
[ "$nginx_answer" = "$(cat "$work/www/freeswitch")" ] || { echo "nginx does not answer the same document:" >&2; echo "$nginx_answer" | head -5 >&2; cat "$work/nginx/error.log" >&2; exit 1; }

export BODY_FILE=$BENCH_DIR/register-1000.body
bench() {
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$1/freeswitch" \
        | grep '^RESULT' | sed 's/^RESULT //'
}
echo "load average before the run: $(cut -d" " -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, POST $(wc -c <"$BODY_FILE") bytes, answer $(wc -c <"$work/www/freeswitch") bytes, $(nproc) cores"
# Warm both up, then alternate so neither always runs on a cooler machine.
DURATION=2s bench "$patchbay_port" >/dev/null
DURATION=2s bench "$nginx_port" >/dev/null
declare -a pb_rps nx_rps pb_p99 nx_p99
for round in $(seq "$ROUNDS"); do
    pb=$(bench "$patchbay_port"); nx=$(bench "$nginx_port")
    echo "round $round patchbay: $pb"
    echo "round $round nginx:    $nx"
    pb_rps+=("$(sed -E 's/.*rps=([0-9]+).*/\1/' <<<"$pb")"); nx_rps+=("$(sed -E 's/.*rps=([0-9]+).*/\1/' <<<"$nx")")
    pb_p99+=("$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$pb")"); nx_p99+=("$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$nx")")
done
python3 - "${pb_rps[*]}" "${nx_rps[*]}" "${pb_p99[*]}" "${nx_p99[*]}" <<'PY'
import sys
pb_rps, nx_rps, pb_p99, nx_p99 = ([float(x) for x in arg.split()] for arg in sys.argv[1:5])
mean = lambda xs: sum(xs) / len(xs)
rps_ratio = mean(pb_rps) / mean(nx_rps)
p99_ratio = mean(pb_p99) / mean(nx_p99)
print(f"mean patchbay: {mean(pb_rps):.0f} req/s, p99 {mean(pb_p99):.3f} ms")
print(f"mean nginx:    {mean(nx_rps):.0f} req/s, p99 {mean(nx_p99):.3f} ms")
print(f"patchbay/nginx: {rps_ratio:.0%} of the requests/s (target >= 50%), "
      f"p99 {p99_ratio:.2f}x (target <= 1.5x): {'PASS' if rps_ratio >= 0.5 and p99_ratio <= 1.5 else 'FAIL'}")
PY
