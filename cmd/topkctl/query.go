package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/topkd/topkd/client"
)

type queryFlags struct {
	leaderboard string
	window      string
	consistency string
	asJSON      bool
}

func (q *queryFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&q.leaderboard, "leaderboard", "default", "leaderboard name")
	f.StringVar(&q.window, "window", "all", `window: "all" or a configured duration such as 1h`)
	f.StringVar(&q.consistency, "consistency", "leader", "cached, leader or linearizable")
	f.BoolVar(&q.asJSON, "json", false, "print the raw answer as JSON")
}

func (a *app) topCmd() *cobra.Command {
	var q queryFlags
	var k int
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show the top-K items of a leaderboard's window",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cons, err := client.ParseConsistency(q.consistency)
			if err != nil {
				return fmt.Errorf("--consistency: %w", err)
			}
			if k <= 0 {
				return fmt.Errorf("--k must be positive, got %d", k)
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.TopK(ctx, q.leaderboard, q.window, k, client.WithConsistency(cons))
				if err != nil {
					return err
				}
				if q.asJSON {
					return a.printJSON(res)
				}
				return a.printTop(res)
			})
		},
	}
	q.register(cmd)
	cmd.Flags().IntVarP(&k, "k", "k", 10, "how many items")
	return cmd
}

func windowLabel(w client.Window) string {
	if w.Type == "global" || w.Duration == "" {
		return "all"
	}
	return w.Duration
}

func (a *app) printTop(res *client.TopKResult) error {
	fmt.Fprintf(a.stdout, "leaderboard %s, window %s, consistency %s, as of %s\n", res.Leaderboard,
		windowLabel(res.Window), res.Consistency, res.AsOf.Format(time.RFC3339))
	if res.Approximate {
		g := "not guaranteed"
		if res.Guaranteed {
			g = "guaranteed"
		}
		fmt.Fprintf(a.stdout, "approximate (max error %d, membership %s)\n", res.MaxError, g)
	}
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	if res.Approximate {
		fmt.Fprintln(w, "RANK\tID\tCOUNT\tLOWER\tUPPER")
	} else {
		fmt.Fprintln(w, "RANK\tID\tCOUNT")
	}
	for i, it := range res.Items {
		if res.Approximate {
			fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%d\n", i+1, it.ID, it.Count, it.LowerBound, it.UpperBound)
		} else {
			fmt.Fprintf(w, "%d\t%s\t%d\n", i+1, it.ID, it.Count)
		}
	}
	if len(res.Items) == 0 {
		fmt.Fprintln(w, "(no items)")
	}
	return w.Flush()
}

func (a *app) countCmd() *cobra.Command {
	var q queryFlags
	cmd := &cobra.Command{
		Use:   "count ITEM",
		Short: "Show one item's count in a leaderboard's window",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cons, err := client.ParseConsistency(q.consistency)
			if err != nil {
				return fmt.Errorf("--consistency: %w", err)
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.Count(ctx, q.leaderboard, args[0], q.window, client.WithConsistency(cons))
				if err != nil {
					return err
				}
				if q.asJSON {
					return a.printJSON(res)
				}
				if res.Approximate {
					_, err = fmt.Fprintf(a.stdout, "%s\t%d\t(between %d and %d, window %s)\n", res.ID, res.Count,
						res.LowerBound, res.UpperBound, windowLabel(res.Window))
				} else if res.Rank > 0 {
					_, err = fmt.Fprintf(a.stdout, "%s\t%d\t(rank %d, window %s)\n", res.ID, res.Count, res.Rank, windowLabel(res.Window))
				} else {
					_, err = fmt.Fprintf(a.stdout, "%s\t%d\t(window %s)\n", res.ID, res.Count, windowLabel(res.Window))
				}
				return err
			})
		},
	}
	q.register(cmd)
	return cmd
}
