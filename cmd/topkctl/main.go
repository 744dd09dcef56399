// Command topkctl is the admin CLI of topkd: status, queries, leaderboards,
// bulk ingest from CSV or NDJSON, and a load generator. It talks to any node
// through the Go client library.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/topkd/topkd/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newApp(os.Stdin, os.Stdout, os.Stderr).root().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "topkctl:", err)
		os.Exit(1)
	}
}

// app holds the global flags and the streams the commands use.
type app struct {
	addr      string
	timeout   time.Duration
	routing   bool
	discovery time.Duration
	refused   time.Duration
	// TLS and the token file; the token itself may come from TOPKD_TOKEN,
	// never from a flag (command lines are visible to every user).
	caFile, certFile, keyFile, serverName, tokenFile string
	stdin                                            io.Reader
	stdout                                           io.Writer
	stderr                                           io.Writer
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *app {
	return &app{stdin: stdin, stdout: stdout, stderr: stderr}
}

// envOr returns the environment variable or def.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "topkctl",
		Short: "Administer and query a topkd cluster",
		Long: "topkctl talks to a topkd node over its HTTP port (Connect protocol).\n" +
			"Every command takes --addr (TOPKD_ADDR): one node or a comma-separated list to fail over across.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	defTimeout, err := time.ParseDuration(envOr("TOPKD_TIMEOUT", "30s"))
	if err != nil {
		defTimeout = 30 * time.Second
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", envOr("TOPKD_ADDR", "127.0.0.1:7070"), "node address(es), comma-separated (TOPKD_ADDR)")
	pf.DurationVar(&a.timeout, "timeout", defTimeout, "deadline of each request, retries included (TOPKD_TIMEOUT)")
	pf.DurationVar(&a.refused, "refused-timeout", 2*time.Second, "give up sooner when no node accepts a connection for this long (0: retry until --timeout)")
	pf.DurationVar(&a.discovery, "discovery", client.DefaultDiscoveryInterval, "how often to learn the cluster's members and partition leaders; 0: use only --addr")
	pf.BoolVar(&a.routing, "routing", true, "send each batch's events straight to their partitions' leaders (false: to one node, which forwards)")
	pf.StringVar(&a.caFile, "ca", envOr("TOPKD_CA", ""), "PEM file of the CA the nodes' certificates are checked against; addresses then mean https (TOPKD_CA)")
	pf.StringVar(&a.certFile, "cert", envOr("TOPKD_CERT", ""), "PEM file of a client certificate, for nodes that ask for one (TOPKD_CERT)")
	pf.StringVar(&a.keyFile, "key", envOr("TOPKD_KEY", ""), "PEM file of the client certificate's key (TOPKD_KEY)")
	pf.StringVar(&a.serverName, "server-name", envOr("TOPKD_SERVER_NAME", ""), "check the nodes' certificates for this name instead of the address (TOPKD_SERVER_NAME)")
	pf.StringVar(&a.tokenFile, "token-file", envOr("TOPKD_TOKEN_FILE", ""), "file holding the bearer token (TOPKD_TOKEN_FILE; or the token itself in TOPKD_TOKEN)")
	root.AddCommand(a.statusCmd(), a.topCmd(), a.countCmd(), a.leaderboardCmd(), a.ingestCmd(), a.benchCmd(), a.tokenCmd(), a.gossipKeyCmd())
	for _, c := range a.clusterCmds() {
		root.AddCommand(c)
	}
	return root
}

// addrs splits --addr.
func (a *app) addrs() []string {
	var out []string
	for _, s := range strings.Split(a.addr, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// client returns a client for --addr; the caller closes it.
func (a *app) client(opts ...client.Option) (*client.Client, error) {
	sec, err := a.securityOptions()
	if err != nil {
		return nil, err
	}
	opts = append(append([]client.Option{client.WithRetryTimeout(a.timeout), client.WithRouting(a.routing), client.WithDiscovery(a.discovery),
		client.WithRefusedTimeout(a.refused)}, sec...), opts...)
	return client.New(a.addrs(), opts...)
}

// withClient runs f with a client and a context bounded by --timeout.
func (a *app) withClient(cmd *cobra.Command, f func(ctx context.Context, c *client.Client) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	ferr := f(ctx, c)
	cerr := c.Close(context.Background())
	if ferr != nil {
		return ferr
	}
	return cerr
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clusterCmds are the membership commands.
func (a *app) clusterCmds() []*cobra.Command {
	return []*cobra.Command{a.joinCmd(), a.leaveCmd(), a.rebalanceCmd(), a.verifyCmd()}
}

func (a *app) rebalanceCmd() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "Spread ingest load: move leaderships, then replicas, off the busiest nodes",
		Long: `rebalance reads each partition's ingest rate at its leader and swaps leaderships, then replicas,
between the busiest and the least busy nodes (every node keeps its count of each, so placement keeps
the result). It prints each swap and returns when the moves are done. --dry-run prints the plan only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				rep, err := c.Rebalance(ctx, dryRun, func(msg string) {
					fmt.Fprintf(a.stdout, "%s  %s\n", time.Now().Format("15:04:05"), msg)
				})
				if err != nil {
					return err
				}
				switch {
				case rep.Planned == 0:
					fmt.Fprintln(a.stdout, "balanced: nothing to move")
				case dryRun:
					fmt.Fprintf(a.stdout, "%d swaps planned (dry run: nothing moved)\n", rep.Planned)
				default:
					fmt.Fprintf(a.stdout, "%d of %d swaps made\n", rep.Made, rep.Planned)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan without moving anything")
	return cmd
}

func (a *app) joinCmd() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "join NODE",
		Short: "Follow a node started with --join until it holds its share of replicas",
		Long: `A node joins by starting with --join and any member's gossip (or HTTP) address; placement then moves
replicas to it, one at a time. join NODE waits until NODE is a member, no move is in flight and NODE
holds replicas, printing the moves as they go and the time it took.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			start, last := time.Now(), ""
			for {
				st, err := c.Status(ctx)
				if err == nil {
					msg, done := joinState(st, args[0])
					if msg != last {
						fmt.Fprintf(a.stdout, "%s  %s\n", time.Now().Format("15:04:05"), msg)
						last = msg
					}
					if done {
						fmt.Fprintf(a.stdout, "%s joined in %s\n", args[0], time.Since(start).Round(100*time.Millisecond))
						return nil
					}
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("%s has not finished joining after %s: %s", args[0], wait, last)
				case <-time.After(250 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Minute, "give up after this long")
	return cmd
}

// joinState describes how far node has come in joining.
func joinState(st *client.Status, node string) (string, bool) {
	var me *client.NodeStatus
	for i := range st.Nodes {
		if st.Nodes[i].NodeID == node {
			me = &st.Nodes[i]
		}
	}
	if me == nil {
		return fmt.Sprintf("%s is not a member yet (start it with --join)", node), false
	}
	into := 0
	for _, mv := range st.Moves {
		for _, id := range mv.To {
			if id == node && !slices.Contains(mv.From, id) {
				into++
			}
		}
	}
	if len(st.Moves) > 0 || me.Replicas == 0 {
		return fmt.Sprintf("%s is a member with %d replicas placed; %d moves in flight, %d of them onto it", node, me.Replicas, len(st.Moves), into), false
	}
	return fmt.Sprintf("%s holds %d replicas; no move in flight", node, me.Replicas), true
}

func (a *app) leaveCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "leave NODE",
		Short: "Drain a node (move its replicas to the other nodes) and remove it from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				return c.Leave(ctx, args[0], force, func(msg string) {
					fmt.Fprintf(a.stdout, "%s  %s\n", time.Now().Format("15:04:05"), msg)
				})
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "leave even if fewer nodes than the replica count remain")
	return cmd
}

func (a *app) verifyCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Compare the state digests of every partition's replicas at one log entry",
		Long: `verify has every partition's leader log a checksum command; each replica records a digest of its
state when it applies that entry, and the digests are compared. It exits non-zero when replicas disagree
or a partition could not be checked. A replica that caught up from a later snapshot reports no digest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.VerifyReplicas(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					if err := a.printJSON(res); err != nil {
						return err
					}
				} else {
					tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "PARTITION\tINDEX\tNODE\tDIGEST\tNOTE")
					for _, p := range res.Partitions {
						if p.Error != "" {
							fmt.Fprintf(tw, "%d\t-\t-\t-\t%s\n", p.Partition, p.Error)
						}
						for _, r := range p.Replicas {
							note := r.Note
							if !p.Agree && r.Digest != "" {
								note = "DISAGREES " + note
							}
							fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", p.Partition, p.Index, r.NodeId, orDash(r.Digest), note)
						}
					}
					tw.Flush()
				}
				bad := 0
				for _, p := range res.Partitions {
					if !p.Agree || p.Error != "" {
						bad++
					}
				}
				if bad > 0 {
					return fmt.Errorf("%d of %d partitions failed verification", bad, len(res.Partitions))
				}
				fmt.Fprintf(a.stdout, "all %d partitions: replicas agree\n", len(res.Partitions))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
