#!/usr/bin/env bash
# Postfix side by side (issue 7): the same count and size of messages
#   smtp-source -> a private Postfix instance -> smtp-sink
#   HTTP        -> Postline (API + worker)    -> the same smtp-sink
# each timed from the first submission until the last message is out of the
# queue (Postfix: its queue directories are empty; Postline: every row is
# recorded delivered). Prints both rates and their ratio.
#
#   deploy/bench-postfix.sh            # N=10000 messages of SIZE=10240 B, C=16 sessions
#   N=2000 SIZE=10240 C=16 deploy/bench-postfix.sh
#   SUBMISSION=1 deploy/bench-postfix.sh  # SMTP submission (issue 14): the
#                                       # time for smtp-source's messages to be
#                                       # accepted by Postfix's smtpd beside
#                                       # benches/submission.rs (16 lettre
#                                       # sessions, STARTTLS + AUTH) into Postline
#   OPENDKIM=1 deploy/bench-postfix.sh  # both sides DKIM-sign (RSA-2048,
#                                       # relaxed/relaxed): Postfix through
#                                       # OpenDKIM as a milter, Postline itself
#   MX=1 deploy/bench-postfix.sh        # direct delivery (issue 16): no relay;
#                                       # both look up the MX of DOMAINS=50
#                                       # domains dNN.bench.test in the same
#                                       # loopback DNS (dnsmasq on
#                                       # 127.0.1.53:53) and deliver to a
#                                       # smtp-sink per domain on
#                                       # 127.0.0.10+i:25, at most
#                                       # PER_SITE=10 connections per domain
#
# Installs postfix if missing (needs root, as apt-get does). The instance is
# private: its own config dir, queue and data dir in a temp dir, smtpd on a
# free loopback port, relaying everything to smtp-sink on another; the
# system postfix service is neither configured nor started. Everything is
# stopped and deleted on exit. With MX=1 the instance runs in a private mount
# namespace (unshare -m) whose /etc/resolv.conf names the loopback DNS, so the
# machine's resolver is untouched; it needs port 25 free on 127.0.0.10-59.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-10000}"
SIZE="${SIZE:-10240}"
C="${C:-16}"

log() { printf '[bench-postfix] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ ! -x /usr/sbin/postfix ] || [ ! -x /usr/sbin/smtp-source ]; then
  [ "$(id -u)" = 0 ] || die "postfix is not installed; run as root to install it"
  log "installing postfix (apt-get, no configuration)"
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq postfix >/dev/null
fi
[ "$(id -u)" = 0 ] || die "run as root: postfix -c starts a master process that needs it"

OPENDKIM="${OPENDKIM:-0}"
MX="${MX:-0}"
DOMAINS="${DOMAINS:-50}"
PER_SITE="${PER_SITE:-10}"
DNS_ADDR=127.0.1.53
if [ "$MX" = 1 ]; then
  [ "$DOMAINS" -ge 1 ] && [ "$DOMAINS" -le 50 ] || die "DOMAINS must be 1-50 (sinks on 127.0.0.10-59)"
  if ! command -v dnsmasq >/dev/null; then
    log "installing dnsmasq-base (apt-get; the package without a service)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq dnsmasq-base >/dev/null
  fi
  command -v unshare >/dev/null || die "unshare (util-linux) is needed for MX=1"
fi
if [ "$OPENDKIM" = 1 ] && ! command -v opendkim >/dev/null; then
  log "installing opendkim (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq opendkim opendkim-tools >/dev/null
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PF="$(mktemp -d /tmp/postline-postfix-XXXXXX)"
chmod 755 "$PF"
SINK_PORT="$(free_port)"
PF_PORT="$(free_port)"
SINK_PID=""
SINK_PIDS=()
DNS_PID=""
DKIM_PID=""
DK=""
cleanup() {
  /usr/sbin/postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  [ -n "$DKIM_PID" ] && kill "$DKIM_PID" 2>/dev/null || true
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
  for pid in "${SINK_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$DNS_PID" ] && kill "$DNS_PID" 2>/dev/null || true
  rm -rf "$PF"
  [ -n "$DK" ] && rm -rf "$DK"
  return 0
}
trap cleanup EXIT

# The sink: Postfix's own load tool. As root it must drop privileges (-u).
/usr/sbin/smtp-sink -u nobody 127.0.0.1:"$SINK_PORT" 1000 &
SINK_PID=$!

if [ "$MX" = 1 ]; then
  # Domain i: d<i>.bench.test (two digits), MX 10 mx.d<i>.bench.test, which
  # is 127.0.0.(10+i), where its own smtp-sink listens on port 25.
  dns_args=()
  for i in $(seq 0 $((DOMAINS - 1))); do
    d=$(printf 'd%02d.bench.test' "$i")
    dns_args+=("--mx-host=$d,mx.$d,10" "--host-record=mx.$d,127.0.0.$((10 + i))")
    /usr/sbin/smtp-sink -u nobody "127.0.0.$((10 + i)):25" 1000 &
    SINK_PIDS+=($!)
  done
  dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
    --bind-interfaces --listen-address="$DNS_ADDR" --port=53 --local-ttl=3600 \
    --user=nobody --pid-file= "${dns_args[@]}" &
  DNS_PID=$!
  for _ in $(seq 50); do
    python3 - "$DNS_ADDR" <<'PY' 2>/dev/null && break
import socket, sys
# A query for the MX of d00.bench.test; an answer without error: dnsmasq is up.
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03d00\x05bench\x04test\x00\x00\x0f\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
s.sendto(q, (sys.argv[1], 53))
sys.exit(0 if s.recv(512)[3] & 0x0f == 0 else 1)
PY
    sleep 0.1
  done
  echo "nameserver $DNS_ADDR" > "$PF/resolv.conf"
  log "dnsmasq on $DNS_ADDR:53 publishing $DOMAINS domains, smtp-sink on 127.0.0.10-$((9 + DOMAINS)):25"
fi

mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cat > "$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydomain = localdomain
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_transport = error:local delivery disabled
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
message_size_limit = 52428800
biff = no
EOF
if [ "$MX" = 1 ]; then
  # No relayhost: every recipient's MX is looked up (DNS only, not
  # /etc/hosts). smtp-source sends to <seq>rcpt@x.bench.test (-N); the
  # canonical map spreads them over the domains by the sequence number's
  # last two digits (00-49, and 50-99 onto 00-49), as Postline's side
  # spreads its recipients round-robin.
  {
    echo "smtp_host_lookup = dns"
    echo "maillog_file = $PF/maillog"
    echo "maillog_file_prefixes = $PF"
    echo "smtp_address_preference = ipv4"
    echo "recipient_canonical_maps = regexp:$PF/etc/spread"
    echo "default_destination_concurrency_limit = $PER_SITE"
    echo "smtp_destination_concurrency_limit = $PER_SITE"
    echo "initial_destination_concurrency = $PER_SITE"
    # Postline's worker.concurrency: sends in flight at once.
    echo "default_process_limit = 128"
  } >> "$PF/etc/main.cf"
  {
    echo '/^([0-9]*([0-4][0-9]))rcpt@x\.bench\.test$/ ${1}rcpt@d${2}.bench.test'
    for t in 5 6 7 8 9; do
      echo "/^([0-9]*$t([0-9]))rcpt@x\\.bench\\.test\$/ \${1}rcpt@d$((t - 5))\${2}.bench.test"
    done
    echo '/^([0-9])rcpt@x\.bench\.test$/ ${1}rcpt@d0${1}.bench.test'
  } > "$PF/etc/spread"
else
  {
    echo "relayhost = [127.0.0.1]:$SINK_PORT"
    echo "default_destination_concurrency_limit = $C"
    echo "smtp_destination_concurrency_limit = $C"
    echo "default_process_limit = $((C * 2 + 10))"
  } >> "$PF/etc/main.cf"
fi
if [ "$OPENDKIM" = 1 ]; then
  # OpenDKIM signing bench.example (the smtp-source sender's domain) with a
  # fresh RSA-2048 key, relaxed/relaxed, on a loopback milter port.
  MILTER_PORT="$(free_port)"
  # OpenDKIM refuses a config or key below a world-writable directory such
  # as /tmp: its files live in a root-only directory of their own.
  DK="$(mktemp -d /run/postline-dkim-XXXXXX)"
  chmod 755 "$DK"
  opendkim-genkey -b 2048 -d bench.example -s pl -D "$DK"
  chown -R opendkim "$DK" 2>/dev/null || true
  cat > "$DK/opendkim.conf" <<DKIMCONF
Syslog no
Mode s
Domain bench.example
Selector pl
KeyFile $DK/pl.private
Canonicalization relaxed/relaxed
SignHeaders From,To,Cc,Subject,Date,Message-ID,MIME-Version,Content-Type,Reply-To
Socket inet:$MILTER_PORT@127.0.0.1
UserID opendkim
PidFile $DK/opendkim.pid
Background no
DKIMCONF
  opendkim -x "$DK/opendkim.conf" -f &
  DKIM_PID=$!
  {
    echo "smtpd_milters = inet:127.0.0.1:$MILTER_PORT"
    echo "non_smtpd_milters = inet:127.0.0.1:$MILTER_PORT"
    echo "milter_default_action = tempfail"
  } >> "$PF/etc/main.cf"
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$MILTER_PORT") 2>/dev/null && break
    sleep 0.1
  done
  log "opendkim milter on 127.0.0.1:$MILTER_PORT signing bench.example"
fi

# The packaged master.cf, without chroot (the private queue has no copies of
# /etc files for a jail) and with smtpd on our loopback port only.
awk -v port="127.0.0.1:$PF_PORT" '
  /^#/ || /^$/ { print; next }
  /^[ \t]/ { print (skip ? "#" : "") $0; next }
  { skip = 0 }
  $1 == "smtp" && $2 == "inet" { $1 = port }
  $2 == "inet" && $1 != port { skip = 1; print "#" $0; next }
  { $5 = "n"; print }
' /usr/share/postfix/master.cf.dist > "$PF/etc/master.cf"

/usr/sbin/postfix -c "$PF/etc" check >/dev/null 2>&1 || /usr/sbin/postfix -c "$PF/etc" set-permissions >/dev/null 2>&1 || true
if [ "$MX" = 1 ]; then
  # The master (and every smtp client it forks) inherits the namespace with
  # the bind-mounted resolv.conf; `postfix stop` below reaches it by pid file.
  unshare -m sh -c 'mount --bind "$1/resolv.conf" /etc/resolv.conf && exec /usr/sbin/postfix -c "$1/etc" start' \
    sh "$PF" >/dev/null || die "postfix did not start (postfix -c DIR check names the problem)"
else
  /usr/sbin/postfix -c "$PF/etc" start >/dev/null
fi
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$PF_PORT") 2>/dev/null && break
  sleep 0.1
done
log "postfix on 127.0.0.1:$PF_PORT ($PF), smtp-sink on 127.0.0.1:$SINK_PORT; $N messages of $SIZE B, $C sessions"

queued() {
  find "$PF/queue/maildrop" "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" -type f 2>/dev/null | wc -l
}

start=$(date +%s.%N)
if [ "$MX" = 1 ]; then
  /usr/sbin/smtp-source -N -s "$C" -m "$N" -l "$SIZE" -f sender@bench.example -t rcpt@x.bench.test 127.0.0.1:"$PF_PORT"
else
  /usr/sbin/smtp-source -s "$C" -m "$N" -l "$SIZE" -f sender@bench.example -t rcpt@example.com 127.0.0.1:"$PF_PORT"
fi
accepted=$(date +%s.%N)
deadline=$(( $(date +%s) + 600 ))
while [ "$(queued)" -gt 0 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "postfix queue not empty after 600 s"
  sleep 0.05
done
done_at=$(date +%s.%N)
deferred=$(find "$PF/queue/deferred" -type f | wc -l)
pf_accept=$(echo "$N / ($accepted - $start)" | bc -l)
pf_rate=$(echo "$N / ($done_at - $start)" | bc -l)
printf '%-34s %d in %.2f s: %.0f msg/s\n' "postfix accepted" "$N" "$(echo "$accepted - $start" | bc -l)" "$pf_accept"
printf '%-34s %d in %.2f s: %.0f msg/s (%d deferred)\n' "postfix delivered" "$N" "$(echo "$done_at - $start" | bc -l)" "$pf_rate" "$deferred"
if [ "$MX" = 1 ]; then
  # Proof that Postfix found the MX hosts: every message sent, to every domain's own host.
  sleep 1
  sent=$(grep -c ' status=sent ' "$PF/maillog" || true)
  hosts=$(grep ' status=sent ' "$PF/maillog" | grep -o 'relay=mx\.d[0-9]*\.bench\.test\[127\.0\.0\.[0-9]*\]:25' | sort -u | wc -l)
  printf '%-34s %d sent, to %d distinct MX hosts\n' "postfix maillog" "$sent" "$hosts"
  [ "$sent" = "$N" ] && [ "$hosts" = "$DOMAINS" ] || die "postfix did not deliver every message to its domain's MX"
fi
/usr/sbin/postfix -c "$PF/etc" stop >/dev/null 2>&1 || true

if [ "${SUBMISSION:-0}" = 1 ]; then
  # smtp-source has no STARTTLS: Postfix's side is plaintext, Postline's TLS.
  out="$(POSTLINE_BENCH_RELAY_PORT="$SINK_PORT" POSTLINE_BENCH_MESSAGES="$N" POSTLINE_BENCH_SIZE="$SIZE" \
    POSTLINE_BENCH_SESSIONS="$C" deploy/dev bench submission 2>&1)" || { echo "$out" >&2; die "postline run failed"; }
  echo "$out" | grep -E '^(postline submission|baseline|ratio)'
  pl_rate=$(echo "$out" | sed -n 's/^postline submission accepted .*: \([0-9]*\) msg\/s.*/\1/p')
  [ -n "$pl_rate" ] || { echo "$out" >&2; die "no postline figure"; }
  printf '%-34s %.2f (postline %s msg/s with STARTTLS vs postfix smtpd %.0f msg/s plaintext, accepted)\n' \
    "ratio submission / postfix" "$(echo "$pl_rate / $pf_accept" | bc -l)" "$pl_rate" "$pf_accept"
  exit 0
fi

# Postline: the load bench's side-by-side mode, relaying to the same sink
# (MX=1: delivering directly through the same DNS to the same sinks).
# With OPENDKIM=1 Postline signs every message too (POSTLINE_BENCH_DKIM).
if [ "$MX" = 1 ]; then
  target=(POSTLINE_BENCH_MX_NAMESERVER="$DNS_ADDR:53" POSTLINE_BENCH_MX_DOMAINS="$DOMAINS"
    POSTLINE_BENCH_MX_CONNECTIONS="$PER_SITE")
else
  target=(POSTLINE_BENCH_RELAY_PORT="$SINK_PORT")
fi
out="$(env "${target[@]}" POSTLINE_BENCH_DKIM="$OPENDKIM" POSTLINE_BENCH_DELIVERY_MESSAGES="$N" \
  POSTLINE_BENCH_DELIVERY_SIZE="$SIZE" POSTLINE_BENCH_SESSIONS="$C" \
  deploy/dev bench load 2>&1)" || { echo "$out" >&2; die "postline run failed"; }
echo "$out" | grep -E '^(direct delivery|postline (accepted|delivered))'
pl_rate=$(echo "$out" | sed -n 's/^postline delivered .*: \([0-9]*\) msg\/s.*/\1/p')
[ -n "$pl_rate" ] || { echo "$out" >&2; die "no postline figure"; }
printf '%-34s %.2f (postline %s msg/s vs postfix %.0f msg/s, end to end)\n' \
  "ratio postline / postfix" "$(echo "$pl_rate / $pf_rate" | bc -l)" "$pl_rate" "$pf_rate"
