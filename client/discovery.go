package client

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
)

// DefaultDiscoveryInterval is how often a client asks the cluster for its
// members (WithDiscovery).
const DefaultDiscoveryInterval = 10 * time.Second

// WithDiscovery sets how often the client asks a node for the cluster's
// members and adds their HTTP addresses to the ones it was given, so it
// keeps working when those nodes leave. 0 turns discovery off.
func WithDiscovery(every time.Duration) Option {
	return func(o *options) { o.discovery = every }
}

// nodeSet is the nodes a client sends to: the addresses it was given, then
// the members it learned. Replaced whole, never modified.
type nodeSet struct {
	addrs []string
	conns []topkv1connect.TopKServiceClient
	// routes is where each partition's leader is, for ingest that splits
	// batches by partition; nil until learned (or with routing off).
	routes *routes
}

func newNodeSet(hc *http.Client, addrs []string) *nodeSet {
	ns := &nodeSet{addrs: addrs}
	for _, a := range addrs {
		ns.conns = append(ns.conns, topkv1connect.NewTopKServiceClient(hc, a))
	}
	return ns
}

// discover refreshes the node set now and then every interval until Close.
func (c *Client) discover(hc *http.Client, every time.Duration) {
	defer c.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.refreshNodes(hc)
		t.Reset(every)
	}
}

// refreshNodes asks one node for the members and keeps the given addresses
// plus every member's HTTP address, in the scheme of the first given one.
func (c *Client) refreshNodes(hc *http.Client) {
	ctx, cancel := context.WithTimeout(c.runCtx, c.opts.attemptTimeout)
	defer cancel()
	cur := c.nodes.Load()
	var st *topkv1.StatusResponse
	start := int(c.next.Add(1))
	for i := range cur.conns {
		r, err := cur.conns[(start+i)%len(cur.conns)].Status(ctx, connect.NewRequest(&topkv1.StatusRequest{}))
		if err == nil {
			st = r.Msg
			break
		}
	}
	if st == nil {
		return
	}
	scheme := "http://"
	if strings.HasPrefix(c.given[0], "https://") {
		scheme = "https://"
	}
	addrs := slices.Clone(c.given)
	for _, n := range st.Nodes {
		if n.HttpAddr == "" || n.Leaving || n.Down {
			continue
		}
		if u := scheme + n.HttpAddr; !slices.Contains(addrs, u) {
			addrs = append(addrs, u)
		}
	}
	var leaders []string // every one is a member above, hence in addrs
	if !c.opts.noRouting {
		leaders = leaderAddrs(st, scheme)
	}
	if slices.Equal(addrs, cur.addrs) && cur.routes.same(leaders, st.IngestLimits) {
		return
	}
	ns := newNodeSet(hc, addrs)
	ns.routes = newRoutes(ns, leaders, st.IngestLimits)
	c.nodes.Store(ns)
}
