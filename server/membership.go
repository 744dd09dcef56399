package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"slices"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protojson"

	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
	nodev1 "github.com/topkd/topkd/proto/topkd/node/v1"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// DefaultReplicas is R, the replicas of every partition once the cluster
// has that many nodes.
const DefaultReplicas = 3

// DefaultDeadNodeGrace is how long gossip must see a member dead before
// its replicas are re-created elsewhere.
const DefaultDeadNodeGrace = 5 * time.Minute

// DefaultMetaVoters is how many members vote in the meta group; the others
// follow it as non-voters.
const DefaultMetaVoters = 3

// loadStoreID reads the data dir's store id, making one on first start: it
// tells a node that comes back with its data from one whose data was wiped.
func loadStoreID(dir string) (string, error) {
	path := filepath.Join(dir, "store-id")
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var r [12]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(r[:])
	return id, WriteFileDurable(path, []byte(id+"\n"))
}

// metaLeader names the meta group's leader and its HTTP address.
func (n *Node) metaLeader() (id, httpAddr string, ok bool) {
	id, ok = n.meta.leader()
	if !ok {
		return "", "", false
	}
	return id, n.memberHTTP(id), true
}

// memberHTTP is a member's HTTP address from the meta group's member list.
func (n *Node) memberHTTP(id string) string {
	st, _ := n.metaFSM.state()
	for _, m := range st.Nodes {
		if m.Id == id {
			return m.HttpAddr
		}
	}
	return ""
}

// proposeMeta applies a meta command on the meta leader, wherever it is:
// here, or forwarded over the peer service. Refusals before proposal are
// retried until ctx ends.
func (n *Node) proposeMeta(ctx context.Context, c *metapb.Command) (interface{}, error) {
	wait := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		res, err := n.proposeMetaOnce(ctx, c, attempt)
		if err == nil || !(errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNotReady)) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

func (n *Node) proposeMetaOnce(ctx context.Context, c *metapb.Command, attempt int) (interface{}, error) {
	if n.meta.isLeader() {
		return n.applyMeta(ctx, c)
	}
	addr := ""
	if id, a, ok := n.metaLeader(); ok && id != n.cfg.NodeID {
		addr = a
	} else if others := n.otherMembers(); len(others) > 0 {
		// No leader heard of (this node may have come back on new addresses
		// that the leader does not know yet): any member forwards.
		addr = others[attempt%len(others)]
	}
	if addr == "" {
		return nil, fmt.Errorf("%w: no meta leader known", ErrNotLeader)
	}
	data, err := encodeMeta(c)
	if err != nil {
		return nil, err
	}
	resp, err := n.peers.client(addr).ApplyMeta(ctx, connect.NewRequest(&nodev1.ApplyMetaRequest{Command: data}))
	if err != nil {
		return nil, fromPeer(err, true)
	}
	if resp.Msg.Config != nil {
		return resp.Msg.Config, nil
	}
	return nil, nil
}

// otherMembers are the HTTP addresses of the other members: from the meta
// state, else from the members file of an earlier run, and --join's.
func (n *Node) otherMembers() []string {
	st, _ := n.metaFSM.state()
	nodes := st.Nodes
	if len(nodes) == 0 {
		nodes = readMembers(n.cfg.DataDir)
	}
	var out []string
	for _, m := range nodes {
		if m.Id != n.cfg.NodeID && m.HttpAddr != "" {
			out = append(out, m.HttpAddr)
		}
	}
	for _, a := range strings.Split(n.cfg.Join, ",") {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// ApplyMeta proposes a meta command a peer forwarded: on the meta leader,
// or forwarded on to it.
func (n *Node) ApplyMeta(ctx context.Context, data []byte) (*pb.LeaderboardConfig, error) {
	c, err := decodeMeta(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	res, err := n.proposeMeta(ctx, c)
	if err != nil {
		return nil, err
	}
	cfg, _ := res.(*pb.LeaderboardConfig)
	return cfg, nil
}

// Join admits a node; a node that is not the meta leader forwards it there.
func (n *Node) Join(ctx context.Context, m *metapb.Node) (*nodev1.JoinResponse, error) {
	if m == nil || m.Id == "" || m.RaftAddr == "" || m.HttpAddr == "" {
		return nil, fmt.Errorf("%w: a joining node needs an id, a Raft and an HTTP address", ErrInvalid)
	}
	// With encrypted gossip, only a node that holds the key is admitted:
	// it must have joined gossip first. Another member may see it first.
	if n.gossip != nil && n.gossip.keyring != nil && !n.gossip.alive()[m.Id] {
		return nil, fmt.Errorf("%w: %s is not in this member's gossip yet; a node joins gossip first, which needs the cluster's gossip key", ErrNotReady, m.Id)
	}
	if _, err := n.proposeMeta(ctx, &metapb.Command{Cmd: &metapb.Command_AddNode{AddNode: &metapb.AddNode{Node: m}}}); err != nil {
		return nil, err
	}
	st, _ := n.metaFSM.state()
	n.log.Info("node joined", "node", m.Id, "raft", m.RaftAddr, "http", m.HttpAddr)
	return &nodev1.JoinResponse{ClusterId: st.ClusterId, Partitions: st.Partitions, Members: st.Nodes}, nil
}

// ReplicaStatus reports this node's replica of a group (mux group id).
func (n *Node) ReplicaStatus(group uint32) (*nodev1.ReplicaStatusResponse, error) {
	g := n.groupByID(group)
	if g == nil {
		return nil, fmt.Errorf("%w: group %d", ErrNotHosted, group)
	}
	if p := int(group) - 1; p >= 0 && p < len(n.parts) && n.parts[p].dropping.Load() {
		return nil, fmt.Errorf("%w: partition %d's replica here is being dropped", ErrNotReady, p)
	}
	last, _ := g.store.LastIndex()
	out := &nodev1.ReplicaStatusResponse{AppliedIndex: g.fsm.AppliedIndex(), LastIndex: last, State: g.raft.State().String(),
		ConfigCommitted: g.isLeader() && !g.changing.Load(), NodeId: n.cfg.NodeID}
	if p := int(group) - 1; p >= 0 && p < len(n.parts) && g.isLeader() {
		out.IngestEventsPerSecond = n.parts[p].rate.perSecond(n.clock.Now())
	}
	out.Voters, out.NonVoters = g.servers()
	out.Digests = n.digests(group)
	return out, nil
}

func (n *Node) groupByID(id uint32) *group {
	if id == MetaGroup {
		return n.meta
	}
	if p := int(id) - 1; p >= 0 && p < len(n.parts) {
		return n.parts[p].group()
	}
	return nil
}

// joinCluster asks a member to admit this node: at addr as an HTTP
// address, until ctx ends.
func (n *Node) joinCluster(ctx context.Context, addrs []string) (*nodev1.JoinResponse, error) {
	req := &nodev1.JoinRequest{Node: n.self()}
	wait := 100 * time.Millisecond
	var last error
	lastLog := time.Now()
	for {
		// Every member's answer of the round: the one that says why (a
		// certificate refused) may not be the last.
		var round []error
		for _, a := range addrs {
			resp, err := n.peers.client(a).Join(ctx, connect.NewRequest(req))
			if err == nil {
				return resp.Msg, nil
			}
			err = fromPeer(err, false)
			if errors.Is(err, ErrIdentity) || errors.Is(err, ErrInvalid) {
				return nil, err
			}
			round = append(round, fmt.Errorf("%s: %w", a, err))
		}
		last = errors.Join(round...)
		if time.Since(lastLog) > 10*time.Second {
			n.log.Warn("not admitted to the cluster yet; retrying", "join", strings.Join(addrs, ","), "err", last)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("join %s: %w (last: %v)", strings.Join(addrs, ","), ctx.Err(), last)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// ---- group membership, run by each group's leader ----

// desiredReplicas is partition p's replica set from the placement table
// (preferred leader first); before the meta leader first wrote the table,
// the first R members.
func (n *Node) desiredReplicas(st *metapb.State, p int) []*metapb.Node {
	if p < len(st.Placement) {
		out := make([]*metapb.Node, 0, len(st.Placement[p].Nodes))
		for _, id := range st.Placement[p].Nodes {
			for _, m := range st.Nodes {
				if m.Id == id {
					out = append(out, m)
				}
			}
		}
		return out
	}
	return st.Nodes[:min(n.cfg.Replicas, len(st.Nodes))]
}

// reconcileMembership moves each group this node leads one step toward its
// desired configuration: a missing replica is added as a non-voter first,
// and promoted to voter only once it has caught up (hashicorp/raft makes a
// server added with AddVoter a voter at once, even an empty one). One
// change per group per round; changes run off the reconcile goroutine.
func (n *Node) reconcileMembership(st *metapb.State) {
	if st.Partitions == 0 {
		return
	}
	n.reconcileLiveness(st)
	n.reconcileMoves(st)
	n.dropReplicas(st)
	if n.meta.isLeader() {
		// Every member follows the meta group; the first ones that are not
		// leaving vote.
		var metaVoters []*metapb.Node
		for _, m := range st.Nodes {
			if !m.Leaving && len(metaVoters) < n.cfg.MetaVoters {
				metaVoters = append(metaVoters, m)
			}
		}
		n.stepMembership(n.meta, metaVoters, st.Nodes, false)
	}
	for _, p := range n.parts {
		if p.group().isLeader() {
			want := n.desiredReplicas(st, p.id)
			n.stepMembership(p.group(), want, want, true)
		}
	}
}

// stepMembership takes one step for g: add the first missing member of all
// as a non-voter, else promote the first caught-up non-voter of voters,
// else remove a replica no longer wanted, else (with lead) hand leadership
// to the preferred leader, voters[0], once it has caught up: placement
// spreads the leaders, and so the ingest, over the nodes.
func (n *Node) stepMembership(g *group, voters, all []*metapb.Node, lead bool) {
	if !g.changing.CompareAndSwap(false, true) {
		return
	}
	f := g.raft.GetConfiguration()
	if f.Error() != nil {
		g.changing.Store(false)
		return
	}
	have := map[string]raft.ServerSuffrage{}
	addr := map[string]string{}
	for _, s := range f.Configuration().Servers {
		have[string(s.ID)] = s.Suffrage
		addr[string(s.ID)] = string(s.Address)
	}
	isVoter := map[string]bool{}
	for _, m := range voters {
		isVoter[m.Id] = true
	}
	var step func() error
	for _, m := range all {
		if _, ok := have[m.Id]; !ok {
			step = func() error {
				g.log.Info("adding a replica as non-voter", "node", m.Id)
				return g.raft.AddNonvoter(raft.ServerID(m.Id), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second).Error()
			}
			break
		}
	}
	for _, m := range all {
		if a, ok := addr[m.Id]; step == nil && ok && a != m.RaftAddr {
			// A member restarted on another address: re-adding it with the
			// same suffrage updates the address.
			step = func() error {
				g.log.Info("updating a replica's address", "node", m.Id, "from", a, "to", m.RaftAddr)
				if have[m.Id] == raft.Voter {
					return g.raft.AddVoter(raft.ServerID(m.Id), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second).Error()
				}
				return g.raft.AddNonvoter(raft.ServerID(m.Id), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second).Error()
			}
		}
	}
	if step == nil {
		for _, m := range voters {
			if have[m.Id] == raft.Nonvoter && isVoter[m.Id] {
				step = func() error {
					if err := n.caughtUp(g, m); err != nil {
						return err
					}
					g.log.Info("promoting a caught-up replica to voter", "node", m.Id)
					return g.raft.AddVoter(raft.ServerID(m.Id), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second).Error()
				}
				break
			}
		}
	}
	if step == nil {
		step = n.removalStep(g, voters, all, have)
	}
	if step == nil && lead && len(voters) > 0 && voters[0].Id != n.cfg.NodeID && have[voters[0].Id] == raft.Voter {
		to := voters[0]
		step = func() error {
			if err := n.caughtUp(g, to); err != nil {
				return err
			}
			g.log.Info("handing leadership to the preferred leader", "to", to.Id)
			return g.raft.LeadershipTransferToServer(raft.ServerID(to.Id), raft.ServerAddress(to.RaftAddr)).Error()
		}
	}
	if step == nil {
		g.changing.Store(false)
		return
	}
	n.pushes.Add(1)
	go func() {
		defer n.pushes.Done()
		defer g.changing.Store(false)
		if err := step(); err != nil && !errors.Is(err, errNotCaughtUp) {
			g.log.Warn("membership change", "err", err)
		}
	}()
}

var errNotCaughtUp = errors.New("replica not caught up")

// caughtUp asks m's replica of g how far it has applied: within a few
// entries of this leader's commit index, it may vote without stalling
// the group (raft-autopilot's test, by a peer call).
func (n *Node) caughtUp(g *group, m *metapb.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := n.peers.client(m.HttpAddr).ReplicaStatus(ctx, connect.NewRequest(&nodev1.ReplicaStatusRequest{Group: g.id}))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errNotCaughtUp, m.Id, err)
	}
	const slack = 64
	if commit := g.raft.CommitIndex(); resp.Msg.AppliedIndex+slack < commit {
		return fmt.Errorf("%w: %s applied %d of %d", errNotCaughtUp, m.Id, resp.Msg.AppliedIndex, commit)
	}
	return nil
}

// join admits this node through the members listed in Config.Join, then
// waits until the meta leader has added it to the meta group and this
// replica has learned the cluster from the log.
func (n *Node) join(ctx context.Context) error {
	var addrs []string
	for _, a := range strings.Split(n.cfg.Join, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	// --join names gossip addresses (memberlist), or HTTP addresses.
	targets := addrs
	if n.gossip != nil && n.gossip.keyring != nil {
		// Encrypted: the members admit only a node they see in gossip.
		https, err := n.gossip.joinRetrying(ctx, addrs, n.cfg.NodeID, 20*time.Second)
		if err != nil {
			return fmt.Errorf("join gossip at %s: %w (is this node's gossip key one the cluster uses?)", n.cfg.Join, err)
		}
		targets = https
	} else if n.gossip != nil {
		if https, err := n.gossip.join(addrs, n.cfg.NodeID); err == nil && len(https) > 0 {
			targets = https
		} else if err != nil {
			n.log.Info("--join is not a gossip address; asking it over HTTP", "join", n.cfg.Join, "gossip_err", err)
		}
	}
	resp, err := n.joinCluster(ctx, targets)
	if err != nil {
		return err
	}
	n.log.Info("admitted to the cluster; waiting for the meta group's log", "cluster", resp.ClusterId, "members", len(resp.Members))
	for {
		st, changed := n.metaFSM.state()
		if st.Partitions != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("joined cluster %s, but no meta leader added this node to the meta group: %w", resp.ClusterId, ctx.Err())
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// refreshSelf records this node's current addresses in the meta group when
// they differ from the ones it had (a restart on other addresses), so that
// peers and group leaders reach it again. A restarted follower's state
// machine holds only its snapshot until a leader reaches it, so the
// addresses come from the members file (writeMembers).
func (n *Node) refreshSelf() {
	known := readMembers(n.cfg.DataDir)
	me := n.self()
	var old *metapb.Node
	for _, m := range known {
		if m.Id == me.Id {
			old = m
		}
	}
	if old == nil || (old.RaftAddr == me.RaftAddr && old.HttpAddr == me.HttpAddr && old.GossipAddr == me.GossipAddr) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if _, err := n.proposeMeta(ctx, &metapb.Command{Cmd: &metapb.Command_AddNode{AddNode: &metapb.AddNode{Node: me}}}); err != nil {
		n.log.Warn("record this node's new addresses", "err", err)
		return
	}
	n.log.Info("recorded this node's new addresses", "raft", me.RaftAddr, "http", me.HttpAddr)
}

// membersFile keeps the last member list this node saw, for a restart.
const membersFile = "members.json"

// writeMembers saves the member list when it changed.
func (n *Node) writeMembers(st *metapb.State) {
	if len(st.Nodes) == 0 {
		return
	}
	b, err := protojson.Marshal(&metapb.State{Nodes: st.Nodes})
	if err != nil || string(b) == n.lastMembers {
		return
	}
	path := filepath.Join(n.cfg.DataDir, membersFile)
	if err := WriteFileDurable(path, b); err == nil {
		n.lastMembers = string(b)
	}
}

// readMembers is the member list last written to dataDir's members file
// (nil without a readable one).
func readMembers(dataDir string) []*metapb.Node {
	b, err := os.ReadFile(filepath.Join(dataDir, membersFile))
	if err != nil {
		return nil
	}
	var st metapb.State
	if protojson.Unmarshal(b, &st) != nil {
		return nil
	}
	return st.Nodes
}

// rejoinGossip rejoins the gossip of the members known from an earlier run.
func (n *Node) rejoinGossip() {
	if n.gossip == nil {
		return
	}
	var addrs []string
	for _, m := range readMembers(n.cfg.DataDir) {
		if m.Id != n.cfg.NodeID && m.GossipAddr != "" {
			addrs = append(addrs, m.GossipAddr)
		}
	}
	if len(addrs) == 0 {
		return
	}
	if _, err := n.gossip.join(addrs, n.cfg.NodeID); err != nil {
		n.log.Info("gossip: no earlier member answered yet", "err", err)
	}
}

// removalStep removes one replica that placement no longer wants, once
// every wanted replica votes: a leader that is to go hands leadership to a
// wanted voter first and lets the new leader remove it.
func (n *Node) removalStep(g *group, voters, all []*metapb.Node, have map[string]raft.ServerSuffrage) func() error {
	wanted := map[string]bool{}
	for _, m := range all {
		wanted[m.Id] = true
	}
	for _, m := range voters {
		if have[m.Id] != raft.Voter {
			return nil // promotions first: never shrink below the wanted voters
		}
	}
	for id := range have {
		if wanted[id] {
			continue
		}
		if id == n.cfg.NodeID {
			if len(voters) == 0 {
				return nil
			}
			to := voters[0]
			return func() error {
				g.log.Info("handing leadership over before leaving the group", "to", to.Id)
				return g.raft.LeadershipTransferToServer(raft.ServerID(to.Id), raft.ServerAddress(to.RaftAddr)).Error()
			}
		}
		return func() error {
			g.log.Info("removing a replica placement no longer wants", "node", id)
			return g.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error()
		}
	}
	return nil
}

// Leave drains member id: it is marked leaving, placement moves its
// replicas to the other nodes (new replicas first, then the old ones are
// removed), and once no group holds it, it is removed from the cluster.
// It refuses to leave fewer members than the replica count unless force.
// progress is told what happens as it goes.
func (n *Node) Leave(ctx context.Context, id string, force bool, progress func(msg string, replicasLeft int)) error {
	st, _ := n.metaFSM.state()
	found, staying := false, 0
	for _, m := range st.Nodes {
		if m.Id == id {
			found = true
		} else if !m.Leaving {
			staying++
		}
	}
	if !found {
		return fmt.Errorf("%w: %q is not a member", ErrInvalid, id)
	}
	if staying == 0 {
		return fmt.Errorf("%w: %s is the last member", ErrInvalid, id)
	}
	if staying < n.cfg.Replicas && !force {
		return fmt.Errorf("%w: after %s leaves, %d nodes remain for %d replicas per partition: add a node first, or force it",
			ErrInvalid, id, staying, n.cfg.Replicas)
	}
	if _, err := n.proposeMeta(ctx, &metapb.Command{Cmd: &metapb.Command_SetLeaving{SetLeaving: &metapb.SetLeaving{Id: id}}}); err != nil {
		return err
	}
	progress(fmt.Sprintf("%s is leaving: moving its replicas to the other nodes", id), -1)
	last := -1
	for {
		held, err := n.replicasOn(ctx, id)
		if err == nil && held != last {
			progress(fmt.Sprintf("%s holds %d replicas", id, held), held)
			last = held
		}
		if err == nil && held == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain %s: %w (it still holds %d replicas; it stays marked leaving)", id, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
	if _, err := n.proposeMeta(ctx, &metapb.Command{Cmd: &metapb.Command_RemoveNode{RemoveNode: &metapb.RemoveNode{Id: id}}}); err != nil {
		return err
	}
	progress(fmt.Sprintf("%s drained and removed from the cluster; it can be stopped", id), 0)
	return nil
}

// replicasOn counts the partition groups whose leader's configuration
// still holds id.
func (n *Node) replicasOn(ctx context.Context, id string) (int, error) {
	st, _ := n.metaFSM.state()
	held := 0
	for p := range int(st.Partitions) {
		servers, err := n.groupServers(ctx, p)
		if err != nil {
			return 0, err
		}
		if slices.Contains(servers, id) {
			held++
		}
	}
	return held, nil
}

// groupServers asks partition p's leader for the group's configuration.
func (n *Node) groupServers(ctx context.Context, p int) ([]string, error) {
	gs, err := n.groupStatus(ctx, p)
	if err != nil {
		return nil, err
	}
	return append(gs.Voters, gs.NonVoters...), nil
}

// reconcileLiveness, on the meta leader, marks a member down once gossip
// has not seen it alive for Config.DeadNodeGrace, and up again when it is
// back: gossip detects, the meta group decides. Timers restart with each
// new meta leader, which only ever delays a decision.
func (n *Node) reconcileLiveness(st *metapb.State) {
	if n.gossip == nil || !n.meta.isLeader() {
		n.deadSince = nil
		return
	}
	if n.deadSince == nil {
		n.deadSince = map[string]time.Time{}
	}
	alive := n.gossip.alive()
	now := time.Now()
	for _, m := range st.Nodes {
		if m.Id == n.cfg.NodeID {
			continue
		}
		var change *metapb.SetDown
		if alive[m.Id] {
			delete(n.deadSince, m.Id)
			if m.Down {
				change = &metapb.SetDown{Id: m.Id, Down: false}
			}
		} else {
			since, ok := n.deadSince[m.Id]
			if !ok {
				n.deadSince[m.Id] = now
			} else if !m.Down && now.Sub(since) > n.cfg.DeadNodeGrace {
				change = &metapb.SetDown{Id: m.Id, Down: true}
			}
		}
		if change == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.applyMeta(ctx, &metapb.Command{Cmd: &metapb.Command_SetDown{SetDown: change}})
		cancel()
		if err != nil {
			n.log.Warn("mark a node down or up", "node", m.Id, "down", change.Down, "err", err)
			continue
		}
		if change.Down {
			n.log.Warn("node dead in gossip past the grace period: re-creating its replicas elsewhere", "node", m.Id, "grace", n.cfg.DeadNodeGrace)
		} else {
			n.log.Info("node alive again in gossip: placement takes it back", "node", m.Id)
		}
	}
}
