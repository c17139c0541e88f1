# Shared by start.sh and stop.sh (sourced; needs $S, the sandbox). A daemon is known only by the PID
# file this sandbox keeps for it, and counts as running only while that PID is alive, not a zombie,
# and still has the daemon's command name: nothing is ever found or killed by name.

pid_file() {
  case "$1" in
    munged) echo "$S/munge/munged.pid" ;;
    *) echo "$S/run/$1.pid" ;;
  esac
}

# prints the PID of a running daemon of this sandbox; fails when there is none
daemon_pid() {
  local file pid state
  file="$(pid_file "$1")"
  [ -s "$file" ] || return 1
  pid="$(tr -dc 0-9 < "$file")"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  state="$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$pid/stat" 2>/dev/null)"
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] || return 1
  echo "$pid"
}

# retry SECONDS COMMAND...: every 0.1 s until it succeeds or the time is up
retry() {
  local tries=$(($1 * 10)) i
  shift
  for ((i = 0; i < tries; i++)); do
    "$@" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
