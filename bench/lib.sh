# Shell helpers shared by the benchmarks (sourced from the repository root).

stop_pid() {
    p=$1
    [ -n "$p" ] || return 0
    kill -0 "$p" 2>/dev/null || return 0
    kill -TERM "$p" 2>/dev/null || true
    i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

cpu_ticks() {
    t=0
    for p in "$@"; do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        shift 11
        t=$((t + $1 + $2))
    done
    echo $t
}

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Prints "rps p50_us p99_us cpu_us_per_request requests errors" from wrk --latency
# output in $1, given the server's CPU ticks over the run in $2 and CLK_TCK in $3.
parse_wrk() {
    awk -v ticks="$2" -v hz="$3" '
        function us(v) {
            if (v ~ /us$/) return v + 0;
            if (v ~ /ms$/) return (v + 0) * 1000;
            if (v ~ /m$/)  return (v + 0) * 60e6;
            if (v ~ /s$/)  return (v + 0) * 1e6;
            return v + 0;
        }
        $1 == "50%" { p50 = us($2) }
        $1 == "99%" { p99 = us($2) }
        /requests in/ { n = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx/ { err += $NF }
        /Socket errors/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
        END {
            if (!n) exit 1;
            printf "%.0f %.0f %.0f %.2f %d %d\n", rps, p50, p99, ticks * 1e6 / hz / n, n, err
        }' "$1"
}
