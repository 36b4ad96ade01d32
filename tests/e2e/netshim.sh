#!/usr/bin/env bash
# Cluster networking for the test cluster of ../shared/k8s (WITH_KUBELET=1), which has neither
# kube-proxy nor cluster DNS: a minimal stand-in for both, on this machine only, so that the
# product runs unchanged (Service names, ClusterIPs, in-cluster API access).
#
#   netshim.sh start STATE_DIR   # background loops; prints nothing on success
#   netshim.sh stop STATE_DIR
#   netshim.sh target STATE_DIR CLUSTER_IP PORT
#
# - Services: on every Endpoints or Service change (watched), each ClusterIP:port is DNAT-ed to one
#   ready endpoint (iptables nat PREROUTING for pod traffic, OUTPUT for this machine's), like
#   kube-proxy's iptables mode; a Service without one refuses connections (DNAT to a port nothing
#   listens on). `netshim.sh target STATE_DIR CLUSTER_IP PORT` prints where one goes now.
# - The `kubernetes` Service (no endpoints: the test API server listens on 127.0.0.1 only) is
#   DNAT-ed to a socat relay on the node's pod-side address, which forwards to 127.0.0.1:$K8S_PORT
#   (DNAT from a pod straight to loopback is dropped even with route_localnet).
# - Pods get a default route through the node (the node's CNI config gives them none).
# - DNS: dnsmasq on port 5353 answers <svc>.<ns>.svc[.cluster.local] with ClusterIPs and
#   forwards the rest; pod DNS (port 53) is redirected to it.
set -euo pipefail
cmd="${1:?start|stop}"
state="${2:?state dir}"
# The API server's port, from the kubeconfig (cluster.sh's K8S_PORT).
K8S_PORT="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')"
POD_CIDR="${POD_CIDR:-10.244.0.0/24}"
# The node's address on every pod veth (host-local's gateway: the range's first address).
GATEWAY="${POD_CIDR%.*}.1"
RELAY_PORT="${RELAY_PORT:-16444}"
# Service NAT for pod traffic (PREROUTING) and for this machine's own (OUTPUT): they differ where
# the target is on the node (pods reach it at $GATEWAY, the node at 127.0.0.1).
POD_CHAIN=LOOKAHEAD-E2E-SVC-POD
HOST_CHAIN=LOOKAHEAD-E2E-SVC-HOST
mkdir -p "$state"

nat() { iptables -w -t nat "$@"; }

stop() {
  local pid
  for pid in $(cat "$state/netshim.pid" "$state/routes.pid" "$state/watch.pids" 2>/dev/null); do
    pkill -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
  done
  [ -f "$state/dnsmasq.pid" ] && kill "$(cat "$state/dnsmasq.pid")" 2>/dev/null || true
  [ -f "$state/relay.pid" ] && kill "$(cat "$state/relay.pid")" 2>/dev/null || true
  rm -f "$state/netshim.pid" "$state/routes.pid" "$state/watch.pids" "$state/events" \
    "$state/dnsmasq.pid" "$state/relay.pid" "$state/rules" "$state/hosts"
  nat -D PREROUTING -j "$POD_CHAIN" 2>/dev/null || true
  nat -D OUTPUT -j "$HOST_CHAIN" 2>/dev/null || true
  nat -D PREROUTING -s "$POD_CIDR" -p udp --dport 53 -j REDIRECT --to-ports 5353 2>/dev/null || true
  nat -D PREROUTING -s "$POD_CIDR" -p tcp --dport 53 -j REDIRECT --to-ports 5353 2>/dev/null || true
  local c
  for c in "$POD_CHAIN" "$HOST_CHAIN"; do nat -F "$c" 2>/dev/null || true; nat -X "$c" 2>/dev/null || true; done
}

# The node's CNI config (ptp, host-local) gives pods a route to the pod CIDR only; a cluster's
# CNI would give them a default route through the node. Add it to each pod's netns.
default_routes() {
  local n gw
  for n in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
    ip netns exec "$n" ip route show default 2>/dev/null | grep -q . && continue
    # A pod's netns can vanish between the listing and here (pods end): skip it then.
    gw=$(ip netns exec "$n" ip route show "$POD_CIDR" 2>/dev/null | awk '{print $3; exit}') || continue
    [ -n "$gw" ] && ip netns exec "$n" ip route add default via "$gw" dev eth0 2>/dev/null || true
  done
}

# One pass: Services + Endpoints -> iptables rules and the DNS hosts file.
sync_once() {
  local services endpoints rules hosts
  services=$(kubectl get services -A -o json) || return 0
  endpoints=$(kubectl get endpoints -A -o json) || return 0
  hosts=$(jq -r '.items[] | select(.spec.clusterIP != null and .spec.clusterIP != "None")
      | "\(.spec.clusterIP) \(.metadata.name).\(.metadata.namespace).svc \(.metadata.name).\(.metadata.namespace).svc.cluster.local"' <<<"$services")
  if [ "$hosts" != "$(cat "$state/hosts" 2>/dev/null)" ]; then
    printf '%s\n' "$hosts" > "$state/hosts"
    [ -f "$state/dnsmasq.pid" ] && kill -HUP "$(cat "$state/dnsmasq.pid")" 2>/dev/null || true
  fi
  # clusterIP port -> (target for pods, target for the node): the first ready address and its
  # port (matched by port name).
  rules=$(jq -r --argjson eps "$endpoints" --arg gw "$GATEWAY" --arg relay "$RELAY_PORT" --arg api "$K8S_PORT" '
    .items[] | select(.spec.clusterIP != null and .spec.clusterIP != "None") as $s
    | $s.spec.ports[] as $p
    | if $s.metadata.namespace == "default" and $s.metadata.name == "kubernetes" then
        "\($s.spec.clusterIP) \($p.port) \($gw):\($relay) 127.0.0.1:\($api)"
      else
        ([$eps.items[] | select(.metadata.namespace == $s.metadata.namespace and .metadata.name == $s.metadata.name)
          | .subsets[]? | select(.addresses != null)
          | {ip: .addresses[0].ip, port: ([.ports[] | select(.name == $p.name or ($p.name == null))][0].port)}][0]) as $e
        # No ready endpoint: refuse the connection, as the REJECT rule of kube-proxy does (port 1 on
        # the node has no listener), rather than let it leave through the default route.
        | if $e == null or $e.port == null then "\($s.spec.clusterIP) \($p.port) \($gw):1 127.0.0.1:1"
          else "\($s.spec.clusterIP) \($p.port) \($e.ip):\($e.port) \($e.ip):\($e.port)" end
      end' <<<"$services")
  if [ "$rules" != "$(cat "$state/rules" 2>/dev/null)" ]; then
    printf '%s\n' "$rules" > "$state/rules"
    # One iptables-restore transaction: flushing and re-adding rule by rule left every Service
    # untranslated (connections refused) for a moment on each endpoint change, e.g. whenever
    # an autoscaled member gained or lost a pod.
    local ip port pod host
    {
      echo "*nat"
      echo "-F $POD_CHAIN"
      echo "-F $HOST_CHAIN"
      while read -r ip port pod host; do
        [ -n "$ip" ] || continue
        echo "-A $POD_CHAIN -d $ip/32 -p tcp --dport $port -j DNAT --to-destination $pod"
        echo "-A $HOST_CHAIN -d $ip/32 -p tcp --dport $port -j DNAT --to-destination $host"
      done <<<"$rules"
      echo "COMMIT"
    } | iptables-restore -w --noflush
  fi
}

start() {
  stop
  sysctl -q -w net.ipv4.ip_forward=1
  nat -N "$POD_CHAIN"
  nat -N "$HOST_CHAIN"
  nat -I PREROUTING -j "$POD_CHAIN"
  nat -I OUTPUT -j "$HOST_CHAIN"
  nat -I PREROUTING -s "$POD_CIDR" -p udp --dport 53 -j REDIRECT --to-ports 5353
  nat -I PREROUTING -s "$POD_CIDR" -p tcp --dport 53 -j REDIRECT --to-ports 5353
  : > "$state/hosts"
  local upstream
  upstream=$(awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)
  dnsmasq --port=5353 --no-hosts --addn-hosts="$state/hosts" --no-resolv \
    ${upstream:+--server="$upstream"} --pid-file="$state/dnsmasq.pid" --log-facility="$state/dnsmasq.log"
  setsid socat "TCP-LISTEN:$RELAY_PORT,fork,reuseaddr" "TCP:127.0.0.1:$K8S_PORT" </dev/null >"$state/relay.log" 2>&1 &
  echo $! > "$state/relay.pid"
  # Routes every 0.2 s (a pod's containers start soon after its sandbox).
  ( while true; do default_routes >>"$state/netshim.log" 2>&1 || true; sleep 0.2; done ) &
  echo $! > "$state/routes.pid"
  # Services follow Endpoints as kube-proxy does: on every change, not on a timer. Two watches
  # (kubectl watches one resource type) feed a FIFO; each event syncs at once (a burst of events
  # is one sync), and a sync every 2 s without events covers a watch that broke.
  rm -f "$state/events" && mkfifo "$state/events"
  local kind
  for kind in endpoints services; do
    ( while true; do kubectl get "$kind" -A --watch-only -o name 2>>"$state/netshim.log"; sleep 0.5; done ) \
      > "$state/events" &
    echo $! >> "$state/watch.pids"
  done
  ( exec 3<"$state/events"
    while true; do
      sync_once >>"$state/netshim.log" 2>&1 || true
      read -r -t 2 -u 3 _ || true
      while read -r -t 0.05 -u 3 _; do :; done
    done ) &
  echo $! > "$state/netshim.pid"
}

# Where ClusterIP $1 port $2 is DNAT-ed now for this machine's traffic (ip:port), if anywhere.
target() {
  awk -v ip="$1" -v port="$2" '$1 == ip && $2 == port {print $4}' "$state/rules" 2>/dev/null
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  target) target "${3:?cluster IP}" "${4:?port}" ;;
  *) echo "usage: $0 start|stop STATE_DIR | target STATE_DIR CLUSTER_IP PORT" >&2; exit 2 ;;
esac
