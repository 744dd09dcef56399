package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/topkd/topkd/client"
)

// plays is a fixed stream: song-c 7 times, song-a 5, song-b 3, song-d once.
func plays() []client.Event {
	var evs []client.Event
	for song, n := range map[string]int{"song-a": 5, "song-b": 3, "song-c": 7, "song-d": 1} {
		for range n {
			evs = append(evs, client.Event{Item: song})
		}
	}
	return evs
}

// IngestBatch sends a batch and waits for its answer; a linearizable query
// then sees every acknowledged event.
func ExampleClient_TopK() {
	node, err := startNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Close()
	ctx := context.Background()

	c, err := client.New([]string{node.Addr})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close(ctx)

	res, err := c.IngestBatch(ctx, "default", plays())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("accepted", res.Accepted)

	top, err := c.TopK(ctx, "default", "all", 3, client.WithConsistency(client.Linearizable))
	if err != nil {
		fmt.Println(err)
		return
	}
	for i, it := range top.Items {
		fmt.Println(i+1, it.ID, it.Count)
	}
	// Output:
	// accepted 16
	// 1 song-c 7
	// 2 song-a 5
	// 3 song-b 3
}

// Add queues events; the client sends them in batches by size or age.
// Flush waits until everything queued so far is acknowledged.
func ExampleClient_Add() {
	node, err := startNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Close()
	ctx := context.Background()

	c, err := client.New([]string{node.Addr}, client.WithBatchSize(500), client.WithBatchAge(10*time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := range 2000 {
		item := fmt.Sprintf("product-%d", i%4)
		if err := c.Add(ctx, "default", client.Event{Item: item, Count: int64(i % 4)}); err != nil {
			fmt.Println(err)
			return
		}
	}
	if err := c.Flush(ctx); err != nil {
		fmt.Println(err)
		return
	}
	n, err := c.Count(ctx, "default", "product-3", "all", client.WithConsistency(client.Linearizable))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(n.ID, n.Count)
	// Close flushes what is left and stops the client's goroutines.
	if err := c.Close(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// product-3 1500
}

// A leaderboard with a one-hour window answers for the last hour only.
func ExampleClient_CreateLeaderboard() {
	node, err := startNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Close()
	ctx := context.Background()

	c, err := client.New([]string{node.Addr})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close(ctx)

	lb, err := c.CreateLeaderboard(ctx, client.Leaderboard{Name: "hashtags", Windows: []string{"1h"}, KMax: 10})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(lb.Name, lb.Mode, lb.Windows, lb.KMax)

	now := time.Now()
	_, err = c.IngestBatch(ctx, "hashtags", []client.Event{
		{Item: "#go", Time: now},
		{Item: "#go", Time: now},
		{Item: "#raft", Time: now},
		{Item: "#old", Count: 10, Time: now.Add(-3 * time.Hour)}, // counts for "all" only
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, w := range []string{"1h", "all"} {
		top, err := c.TopK(ctx, "hashtags", w, 2, client.WithConsistency(client.Linearizable))
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Print(w, ":")
		for _, it := range top.Items {
			fmt.Print(" ", it.ID, "=", it.Count)
		}
		fmt.Println()
	}
	// Output:
	// hashtags exact [1h] 10
	// 1h: #go=2 #raft=1
	// all: #old=10 #go=2
}
