package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/topkd/topkd/client"
)

func (a *app) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the node and its partitions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return a.printJSON(st)
				}
				return a.printStatus(st)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw answer as JSON")
	return cmd
}

func (a *app) printStatus(st *client.Status) error {
	ready := "ready"
	if !st.Node.Ready {
		ready = "NOT READY"
	}
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "node\t%s (%s)\n", st.Node.NodeID, ready)
	fmt.Fprintf(w, "http\t%s\n", st.Node.HTTPAddr)
	fmt.Fprintf(w, "raft\t%s\n", st.Node.RaftAddr)
	fmt.Fprintf(w, "meta leader\t%s\n", st.MetaLeader)
	fmt.Fprintf(w, "nodes\t%d\n", len(st.Nodes))
	fmt.Fprintf(w, "partitions\t%d\n", st.Partitions)
	fmt.Fprintf(w, "heap\t%s\n", humanBytes(st.StateBytes))
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	w = tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tHTTP\tLIVENESS\tROLE\tREPLICAS")
	for _, n := range st.Nodes {
		live := "alive"
		switch {
		case n.Down:
			live = "down"
		case n.Leaving:
			live = "leaving"
		case !n.Alive:
			live = "unknown"
		}
		role := "member"
		if n.MetaVoter {
			role = "meta voter"
		}
		if n.NodeID == st.MetaLeader {
			role = "meta leader"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", n.NodeID, n.HTTPAddr, live, role, n.Replicas)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	w = tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "PARTITION\tSTATE\tLEADER\tREPLICAS\tCOMMIT\tAPPLIED\tLAG\tSNAPSHOT\tITEMS\tEVENTS/S\t")
	for _, p := range st.Replicas {
		lag := uint64(0)
		if p.CommitIndex > p.AppliedIndex {
			lag = p.CommitIndex - p.AppliedIndex
		}
		reps := strings.Join(p.Placement, ",")
		if reps == "" {
			reps = strings.Join(p.Voters, ",")
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.0f\t\n", p.Partition, p.State, p.Leader, reps, p.CommitIndex,
			p.AppliedIndex, lag, p.LastSnapshotIndex, p.DistinctItems, p.IngestEventsPerSecond)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(st.Moves) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	w = tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MOVING\tFROM\tTO\tSTEP\tFOR")
	for _, mv := range st.Moves {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", mv.Partition, strings.Join(mv.From, ","), strings.Join(mv.To, ","), mv.Step,
			time.Since(mv.Started).Round(time.Second))
	}
	return w.Flush()
}

func humanBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
