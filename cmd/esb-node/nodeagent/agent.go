// Package nodeagent is esb-node's logic: on a Kubernetes node whose pods
// get their network from esb-bridge and esb-ipam, it watches the cluster's
// Node objects and keeps three things true, the way kindnet and flannel's
// host-gw backend do:
//
//   - the node's conflist carries its own spec.podCIDR (written atomically,
//     rewritten only when it changes);
//   - the node's main routing table has one route per other node,
//     "<podCIDR> via <InternalIP>", marked with the agent's route protocol;
//     routes of nodes that are gone are removed, and no route without the
//     mark is ever touched;
//   - the node's NetworkUnavailable condition is False once its routes are
//     programmed.
//
// It works from the informer's cache: while the API server cannot be
// reached the cache keeps its last state, so the routes stay as they are.
// Every pass compares the kernel with the cache, so restarts and repeated
// passes change nothing that is already right. kube-proxy, Services,
// cluster DNS, NetworkPolicy and egress masquerade are not its business.
//
// Kubernetes client imports stay in this package and its command.
package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/edge-serverless-box/esbnet/conf"
)

// ConditionReason is the reason esb-node gives NetworkUnavailable=False.
const ConditionReason = "EsbNodeRoutesProgrammed"

// Config is what one agent needs; NodeName and ConflistPath are required.
type Config struct {
	// NodeName is this node's Node object.
	NodeName string
	// ConflistPath is where the node's runtime reads the esb network.
	ConflistPath string
	// CNIVersion of the conflist (containerd 1.6 reads up to 1.0.0).
	CNIVersion string
	// Bridge is esb-bridge's bridge name; empty means esb-cni0.
	Bridge string
	// DataDir is esb-ipam's store directory; empty means /run/esb/ipam.
	DataDir string
	// Resync is the period of a full pass besides the ones on change;
	// 0 means 30 s.
	Resync time.Duration
	// Log receives one line per change and per failed pass.
	Log *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.NodeName == "" {
		return errors.New("node name: empty (set --node-name or NODE_NAME)")
	}
	if c.ConflistPath == "" {
		return errors.New("conflist path: empty")
	}
	if c.CNIVersion == "" {
		c.CNIVersion = conf.CNIVersion
	}
	if c.Bridge == "" {
		c.Bridge = conf.BridgeName
	}
	if c.Resync <= 0 {
		c.Resync = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Agent keeps one node's conflist, routes and network condition in step
// with the cluster's Node objects.
type Agent struct {
	cfg    Config
	client kubernetes.Interface
	routes Routes
	kick   chan struct{}
}

// New returns an agent for cfg that talks to the API server through client
// and programs routes through routes.
func New(cfg Config, client kubernetes.Interface, routes Routes) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	// Fail on a bad version now rather than on the first pod CIDR.
	if _, err := NodeConflist(netip.MustParsePrefix("10.88.0.0/24"), cfg.CNIVersion, cfg.Bridge, cfg.DataDir); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, client: client, routes: routes, kick: make(chan struct{}, 1)}, nil
}

// Run watches Node objects and syncs on every change and every Resync until
// ctx ends. A failed pass is logged and retried with a backoff up to Resync;
// it returns only ctx's error, or an error when the cache never syncs.
func (a *Agent) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(a.client, 0)
	inf := factory.Core().V1().Nodes()
	lister := inf.Lister()
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.trigger() },
		UpdateFunc: func(any, any) { a.trigger() },
		DeleteFunc: func(any) { a.trigger() },
	}); err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return fmt.Errorf("wait for the node cache: %w", ctx.Err())
	}
	a.cfg.Log.Info("node cache synced", "node", a.cfg.NodeName)

	tick := time.NewTicker(a.cfg.Resync)
	defer tick.Stop()
	backoff := time.Duration(0)
	var retry <-chan time.Time
	for {
		err := a.SyncFromLister(ctx, lister)
		if err == nil {
			backoff, retry = 0, nil
		} else {
			backoff = min(max(2*backoff, 500*time.Millisecond), a.cfg.Resync)
			retry = time.After(backoff)
			a.cfg.Log.Warn("sync failed", "err", err, "retry", backoff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.kick:
		case <-tick.C:
		case <-retry:
		}
	}
}

func (a *Agent) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// SyncFromLister runs one pass over the nodes in the lister's cache.
func (a *Agent) SyncFromLister(ctx context.Context, lister listersv1.NodeLister) error {
	nodes, err := lister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list cached nodes: %w", err)
	}
	return a.Sync(ctx, nodes)
}

// Sync runs one pass over nodes: the conflist, the routes, then the node's
// condition. Idempotent; errors of each step are joined and the later
// steps still run, except the condition, which is set only when the routes
// are right.
func (a *Agent) Sync(ctx context.Context, nodes []*corev1.Node) error {
	var self *corev1.Node
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			self = n
		}
	}
	var errs []error
	if self == nil {
		a.cfg.Log.Debug("own node not in the cache yet", "node", a.cfg.NodeName)
	} else if err := a.writeConflist(self); err != nil {
		errs = append(errs, err)
	}
	routesErr := a.syncRoutes(nodes)
	if routesErr != nil {
		errs = append(errs, routesErr)
	}
	if self != nil && routesErr == nil && self.Spec.PodCIDR != "" {
		if err := a.markNetworkAvailable(ctx, self); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Agent) writeConflist(self *corev1.Node) error {
	if self.Spec.PodCIDR == "" {
		return nil // not allocated yet; the update event brings it
	}
	cidr, err := netip.ParsePrefix(self.Spec.PodCIDR)
	if err != nil {
		return fmt.Errorf("node %s spec.podCIDR %q: %w", self.Name, self.Spec.PodCIDR, err)
	}
	data, err := NodeConflist(cidr, a.cfg.CNIVersion, a.cfg.Bridge, a.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("node %s: %w", self.Name, err)
	}
	changed, err := WriteFileAtomic(a.cfg.ConflistPath, data, 0o644)
	if err != nil {
		return err
	}
	if changed {
		a.cfg.Log.Info("conflist written", "path", a.cfg.ConflistPath, "podCIDR", cidr)
	}
	return nil
}

// DesiredRoutes returns the route to every node but self that has pod
// CIDRs and an InternalIP of the same family, sorted by destination.
func DesiredRoutes(self string, nodes []*corev1.Node) []Route {
	var out []Route
	for _, n := range nodes {
		if n.Name == self || n.DeletionTimestamp != nil {
			continue
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			dst, err := netip.ParsePrefix(c)
			if err != nil {
				continue
			}
			if gw, ok := internalIP(n, dst.Addr().Is4()); ok {
				out = append(out, Route{Dst: dst.Masked(), Gw: gw})
			}
		}
	}
	sortRoutes(out)
	return out
}

func internalIP(n *corev1.Node, v4 bool) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err == nil && ip.Is4() == v4 {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (a *Agent) syncRoutes(nodes []*corev1.Node) error {
	want := DesiredRoutes(a.cfg.NodeName, nodes)
	have, err := a.routes.List()
	if err != nil {
		return err
	}
	wantBy := make(map[netip.Prefix]Route, len(want))
	for _, r := range want {
		wantBy[r.Dst] = r
	}
	haveBy := make(map[netip.Prefix]Route, len(have))
	var errs []error
	for _, r := range have {
		haveBy[r.Dst] = r
		if _, ok := wantBy[r.Dst]; ok {
			continue
		}
		if err := a.routes.Delete(r); err != nil {
			errs = append(errs, err)
			continue
		}
		a.cfg.Log.Info("route removed", "route", r.String())
	}
	for _, r := range want {
		if haveBy[r.Dst] == r {
			continue
		}
		if err := a.routes.Replace(r); err != nil {
			errs = append(errs, err)
			continue
		}
		a.cfg.Log.Info("route set", "route", r.String())
	}
	return errors.Join(errs...)
}

func (a *Agent) markNetworkAvailable(ctx context.Context, self *corev1.Node) error {
	for _, c := range self.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse && c.Reason == ConditionReason {
			return nil
		}
	}
	now := metav1.Now()
	patch, err := json.Marshal(map[string]any{
		"status": map[string]any{
			"conditions": []corev1.NodeCondition{{
				Type:               corev1.NodeNetworkUnavailable,
				Status:             corev1.ConditionFalse,
				Reason:             ConditionReason,
				Message:            "esb-node wrote the conflist and the routes to the other nodes",
				LastTransitionTime: now,
				LastHeartbeatTime:  now,
			}},
		},
	})
	if err != nil {
		return fmt.Errorf("encode node condition: %w", err)
	}
	if _, err := a.client.CoreV1().Nodes().PatchStatus(ctx, self.Name, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile; the delete event follows
		}
		return fmt.Errorf("set node %s NetworkUnavailable=False: %w", self.Name, err)
	}
	a.cfg.Log.Info("node condition set", "node", self.Name, "NetworkUnavailable", "False")
	return nil
}
