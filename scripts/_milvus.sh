# Sourced by scripts/test.sh after _pg.sh: start the standalone Milvus server of the `milvus`
# package (extra milvus-server) in the background through scripts/milvus_server.py, wait until
# it answers, and export TRACEMARK_TEST_MILVUS_URL for the tests that run the vector store on
# Milvus. Defines tracemark_milvus_stop, which stops a server this script started (test.sh
# calls it from its EXIT trap); a server that answered already (a previous run in this
# session) is reused and left running. TRACEMARK_SKIP_MILVUS=1 skips all of this (those tests
# are then skipped, with the reason). TRACEMARK_MILVUS_PORT (default 19530) and
# TRACEMARK_MILVUS_DIR (default /tmp/tracemark-milvus-$UID) move the server;
# TRACEMARK_MILVUS_START_TIMEOUT (default 180 s) bounds the wait for it to answer. One such
# server per machine: its embedded etcd listens on fixed ports, so a second one on another
# gRPC port fails at start (the launcher log says so); share the running one instead.
tracemark_milvus_stop() { :; }
if [ "${TRACEMARK_SKIP_MILVUS:-0}" = "1" ]; then
  echo "TRACEMARK_SKIP_MILVUS=1: Milvus tests will be skipped" >&2
  return 0
fi
milvus_py="${TRACEMARK_PYTHON:-.venv/bin/python}"
milvus_launcher="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/milvus_server.py"
milvus_dir="${TRACEMARK_MILVUS_DIR:-/tmp/tracemark-milvus-$(id -u)}"
milvus_port="${TRACEMARK_MILVUS_PORT:-19530}"
milvus_timeout="${TRACEMARK_MILVUS_START_TIMEOUT:-180}"
milvus_started_pid=""

milvus_answers() {  # [timeout] [launcher pid: give up as soon as it has exited]
  "$milvus_py" "$milvus_launcher" wait --port "$milvus_port" --timeout "$1" \
    ${2:+--launcher-pid "$2"} 2>/dev/null
}
milvus_cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }
milvus_launcher_alive() {  # the pid in launcher.pid is a live scripts/milvus_server.py
  local pid
  pid="$(cat "$milvus_dir/launcher.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  case "$(milvus_cmdline "$pid")" in *"milvus_server.py run"*) return 0 ;; esac
  return 1
}
milvus_kill_ours() {  # stop our launcher (it stops the server); then any server it left behind
  local pid i
  if milvus_launcher_alive; then
    pid="$(cat "$milvus_dir/launcher.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  pid="$(cat "$milvus_dir/server.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    case "$(milvus_cmdline "$pid")" in
      "$milvus_dir/data/bin/milvus "*) kill -KILL "$pid" 2>/dev/null || true ;;
    esac
  fi
  rm -f "$milvus_dir/launcher.pid" "$milvus_dir/server.pid"
}
milvus_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$milvus_port") 2>/dev/null; }

if milvus_port_busy && milvus_answers 5; then
  echo "Milvus test server: reusing the one answering on 127.0.0.1:$milvus_port" >&2
else
  milvus_kill_ours  # a launcher that no longer answers, or stale pid files
  if milvus_port_busy; then
    echo "port $milvus_port is in use by something that is not a Milvus server answering;" \
         "free it or set TRACEMARK_MILVUS_PORT (or TRACEMARK_SKIP_MILVUS=1)" >&2
    exit 1
  fi
  "$milvus_py" -c "import milvus, pymilvus" 2>/dev/null || {
    echo "the milvus-server and milvus extras are not installed in $milvus_py's environment" >&2
    exit 1; }
  mkdir -p "$milvus_dir"
  rm -rf "$milvus_dir/data"  # a throw-away server: every started run begins empty
  # setsid: the server survives the shell that started it only until tracemark_milvus_stop
  setsid "$milvus_py" "$milvus_launcher" run --base-dir "$milvus_dir" --port "$milvus_port" \
    >"$milvus_dir/launcher.log" 2>&1 </dev/null &
  milvus_started_pid=$!
  if ! milvus_answers "$milvus_timeout" "$milvus_started_pid"; then
    echo "the Milvus test server did not answer on 127.0.0.1:$milvus_port (it exited, or" \
         "${milvus_timeout}s passed); see $milvus_dir/launcher.log and $milvus_dir/data/logs/" >&2
    tail -n 5 "$milvus_dir/launcher.log" >&2 2>/dev/null
    milvus_kill_ours
    exit 1
  fi
  tracemark_milvus_stop() {
    if [ -n "$milvus_started_pid" ]; then
      milvus_kill_ours
      milvus_started_pid=""
    fi
  }
  echo "Milvus test server started (pid $milvus_started_pid, data in $milvus_dir)" >&2
fi
export TRACEMARK_TEST_MILVUS_URL="milvus://127.0.0.1:$milvus_port"
echo "Milvus test server: $TRACEMARK_TEST_MILVUS_URL" >&2
