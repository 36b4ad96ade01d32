#!/usr/bin/env bash
# Cluster networking for the test cluster of ../shared/k8s (WITH_KUBELET=1), which has neither
# kube-proxy nor cluster DNS: a minimal stand-in for both, on this machine only, so that the
# product runs unchanged (Service names, ClusterIPs, in-cluster API access).
#
#   netshim.sh start STATE_DIR   # background loop; prints nothing on success
#   netshim.sh stop STATE_DIR
#
# - Services: every second, each ClusterIP:port is DNAT-ed to one ready endpoint (iptables nat
#   PREROUTING for pod traffic, OUTPUT for this machine's), like kube-proxy's iptables mode; a
#   Service without one refuses connections (DNAT to a port nothing listens on).
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
  [ -f "$state/netshim.pid" ] && kill "$(cat "$state/netshim.pid")" 2>/dev/null || true
  [ -f "$state/dnsmasq.pid" ] && kill "$(cat "$state/dnsmasq.pid")" 2>/dev/null || true
  [ -f "$state/relay.pid" ] && kill "$(cat "$state/relay.pid")" 2>/dev/null || true
  rm -f "$state/netshim.pid" "$state/dnsmasq.pid" "$state/relay.pid" "$state/rules" "$state/hosts"
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
  # Routes every 0.2 s (a pod's containers start soon after its sandbox), Services every second.
  ( while true; do
      for _ in 1 2 3 4 5; do default_routes >>"$state/netshim.log" 2>&1 || true; sleep 0.2; done
      sync_once >>"$state/netshim.log" 2>&1 || true
    done ) &
  echo $! > "$state/netshim.pid"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop STATE_DIR" >&2; exit 2 ;;
esac
