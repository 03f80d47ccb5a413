#!/bin/bash
# Idle CPU and RSS of sonde-agent on its embedded defaults (ports moved off the defaults).
BIN="$(dirname "$0")/../target/release/sonde-agent"
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p sonde-agent" >&2; exit 1; }
SONDE_STATSD_UDP=127.0.0.1:18125 SONDE_EXPORTERS_PROMETHEUS_LISTEN=127.0.0.1:19464 $BIN 2>/dev/null &
PID=$!
sleep 5
read_cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
T0=$(read_cpu); S0=$(date +%s.%N)
# A Prometheus-like scrape every 10 s during the window.
for i in 1 2 3 4 5 6; do curl -s -o /dev/null http://127.0.0.1:19464/metrics; sleep 10; done
T1=$(read_cpu); S1=$(date +%s.%N)
HZ=$(getconf CLK_TCK)
RSS=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
HWM=$(awk '/VmHWM/{print $2}' /proc/$PID/status)
echo "cpu_ticks=$((T1-T0)) hz=$HZ wall=$(echo "$S1-$S0" | bc) cpu_percent=$(echo "scale=4; ($T1-$T0)/$HZ/($S1-$S0)*100" | bc) rss_kib=$RSS peak_rss_kib=$HWM"
kill -TERM $PID; wait $PID; echo "exit=$?"
