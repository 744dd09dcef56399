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
	addr    string
	timeout time.Duration
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
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
	root.AddCommand(a.statusCmd(), a.topCmd(), a.countCmd(), a.leaderboardCmd(), a.ingestCmd(), a.benchCmd())
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
	opts = append([]client.Option{client.WithRetryTimeout(a.timeout)}, opts...)
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

// clusterCmds are the membership commands. join and rebalance are not
// built yet: a node joins by starting with --join, and placement
// rebalances by itself as members change.
func (a *app) clusterCmds() []*cobra.Command {
	notYet := func(use, short, instead string) *cobra.Command {
		name := strings.Fields(use)[0]
		return &cobra.Command{
			Use:   use,
			Short: short + " (not built yet)",
			Args:  cobra.ArbitraryArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				return fmt.Errorf("topkctl %s is not built yet: %s", name, instead)
			},
		}
	}
	return []*cobra.Command{
		notYet("join ADDR", "Admit a node into the cluster", "start the new node with --join and any member's gossip address"),
		a.leaveCmd(),
		a.verifyCmd(),
		notYet("rebalance", "Converge replica placement and spread leaders",
			"placement follows the members by itself, and each partition's leadership moves to its preferred leader"),
	}
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
