package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"connectrpc.com/connect"

	nodev1 "github.com/topkd/topkd/proto/topkd/node/v1"
	"github.com/topkd/topkd/server/security"
)

// MemberKeys is one member's answer to a gossip key rotation step.
type MemberKeys struct {
	Node   string
	KeyIDs []string // after the step, the one in use first
	Err    error
}

// ErrRotationIncomplete: a gossip key step failed on some member; the
// answer says which. Repeating the step is safe.
var ErrRotationIncomplete = errors.New("the gossip key step did not complete on every member")

// GossipKey applies one rotation step to this node's keyring.
func (n *Node) GossipKey(op string, key []byte) ([]string, error) {
	return n.gossip.rotateKey(op, key)
}

// RotateGossipKey applies one rotation step on every member of the cluster.
// A cluster-wide rotation is install (every member accepts the new key),
// use (every member sends with it), remove (the old key is dropped). Use
// is refused unless every member has the key installed, so no member
// sends what another cannot read.
func (n *Node) RotateGossipKey(ctx context.Context, op string, key []byte) ([]MemberKeys, error) {
	if n.gossip == nil || n.gossip.keyring == nil {
		return nil, ErrGossipNotEncrypted
	}
	if op != GossipKeyList {
		if l := len(key); l != 16 && l != 24 && l != 32 {
			return nil, fmt.Errorf("%w: gossip key of %d bytes, want 16, 24 or 32", ErrInvalid, l)
		}
	}
	if op == GossipKeyUse {
		listed, err := n.RotateGossipKey(ctx, GossipKeyList, nil)
		if err != nil {
			return listed, err
		}
		id := security.GossipKeyID(key)
		for _, m := range listed {
			if !slices.Contains(m.KeyIDs, id) {
				return listed, fmt.Errorf("%w: gossip key %s is not installed on %s; install it first", ErrInvalid, id, m.Node)
			}
		}
	}
	st, _ := n.metaFSM.state()
	out := make([]MemberKeys, len(st.Nodes))
	var wg sync.WaitGroup
	for i, m := range st.Nodes {
		out[i].Node = m.Id
		wg.Go(func() {
			if m.Id == n.cfg.NodeID {
				out[i].KeyIDs, out[i].Err = n.GossipKey(op, key)
				return
			}
			r, err := n.peers.client(m.HttpAddr).GossipKey(ctx, connect.NewRequest(&nodev1.GossipKeyRequest{Op: op, Key: key}))
			if err != nil {
				out[i].Err = fromPeer(err, false)
				return
			}
			out[i].KeyIDs = r.Msg.KeyIds
		})
	}
	wg.Wait()
	for _, m := range out {
		if m.Err != nil {
			return out, fmt.Errorf("%w: %s: %v", ErrRotationIncomplete, m.Node, m.Err)
		}
	}
	return out, nil
}
