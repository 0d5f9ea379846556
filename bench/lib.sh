# Shared by the bench scripts, sourced from the repository root: `. bench/lib.sh`.

# free_ports N: N distinct free ports on 127.0.0.1 (all held open until every one is picked:
# ports picked one at a time could repeat, and a member given a taken port failed to bind
# while the script waited for it).
free_ports() {
  python3 -c 'import socket,sys; s=[socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1",0)) for x in s]; print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}
