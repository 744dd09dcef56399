package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/topkd/topkd/client"
)

type benchFlags struct {
	mapping
	file             string
	events           int
	items            uint64
	zipfS            float64
	zipfV            float64
	seed             uint64
	producers        int
	batch            int
	perLeader        bool
	leaderboard      string
	queryK           int
	queryRate        float64
	queryWorkers     int
	probeHealthz     bool
	rate             float64
	queryConsistency string
	queryWindow      string
	progress         bool
	asJSON           bool
}

func (a *app) benchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a node with Zipf-distributed events (or a replayed file) and measure it",
		Long: "bench sends --events events from --producers parallel producers in batches of --batch and reports the\n" +
			"acknowledged events/s, the ack latency of batches, the latency of top-K queries sent at --query-rate\n" +
			"during the load, and this process's CPU time (the load generator's own cost).\n" +
			"Items follow a Zipf law over --items ids (exponent --zipf-s); --file replays a CSV or NDJSON file instead,\n" +
			"loaded into memory before the clock starts (column flags as for ingest).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBench(cmd.Context(), f)
		},
	}
	f.mapping.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.file, "file", "", "replay this CSV or NDJSON file (gzip or not) instead of generating events")
	fl.IntVar(&f.events, "events", 1_000_000, "events to send (with --file: at most this many, 0 = the whole file)")
	fl.Uint64Var(&f.items, "items", 100_000, "distinct item ids to draw from")
	fl.Float64Var(&f.zipfS, "zipf-s", 1.1, "Zipf exponent s (> 1)")
	fl.Float64Var(&f.zipfV, "zipf-v", 1, "Zipf parameter v (>= 1)")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed")
	fl.IntVar(&f.producers, "producers", 4, "parallel producers (each has its own client and producer id)")
	fl.IntVar(&f.batch, "batch", 1000, "events per batch")
	fl.BoolVar(&f.perLeader, "batch-per-leader", false, perLeaderUsage)
	fl.StringVar(&f.leaderboard, "leaderboard", "default", "leaderboard to load")
	fl.IntVar(&f.queryK, "query-k", 100, "K of the top-K queries run during the load")
	fl.Float64Var(&f.queryRate, "query-rate", 10, "top-K queries per second during the load (0: none)")
	fl.IntVar(&f.queryWorkers, "query-workers", 0, "instead of --query-rate, run top-K queries back to back from this many workers during the load: the query throughput")
	fl.Float64Var(&f.rate, "rate", 0, "offered load in events per second (0: as fast as acknowledgements allow)")
	fl.StringVar(&f.queryConsistency, "query-consistency", "cached", "consistency of the top-K queries")
	fl.StringVar(&f.queryWindow, "query-window", "all", "window of the top-K queries")
	fl.BoolVar(&f.probeHealthz, "probe-healthz", false, "also GET /healthz of the first node at --query-rate during the load: the floor a query's latency is compared with")
	fl.BoolVar(&f.progress, "progress", true, "show a progress bar on stderr")
	fl.BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	return cmd
}

// benchReport is what bench measures.
type benchReport struct {
	Source          string         `json:"source"`
	Events          uint64         `json:"events_acknowledged"`
	Batches         uint64         `json:"batches"`
	Accepted        uint64         `json:"accepted"`
	Rejected        uint64         `json:"rejected"`
	Duplicates      uint64         `json:"duplicate_batches"`
	RetriedBatches  uint64         `json:"retried_batches"`
	Producers       int            `json:"producers"`
	BatchSize       int            `json:"batch_size"`
	Elapsed         time.Duration  `json:"elapsed_ns"`
	EventsPerSecond float64        `json:"events_per_second"`
	Ack             latencySummary `json:"ack_latency"`
	Queries         int            `json:"queries"`
	QueriesPerSec   float64        `json:"queries_per_second"`
	QueryErrors     int            `json:"query_errors"`
	QueryK          int            `json:"query_k"`
	QueryLevel      string         `json:"query_consistency"`
	Query           latencySummary `json:"query_latency"`
	Healthz         latencySummary `json:"healthz_latency"`
	HealthzProbes   int            `json:"healthz_probes"`
	CPUUser         time.Duration  `json:"cpu_user_ns"`
	CPUSystem       time.Duration  `json:"cpu_system_ns"`
	// The nodes' own CPU time over the run (process_cpu_seconds_total from
	// /metrics, summed over --addr); 0 when a node did not report it.
	ServerCPU time.Duration `json:"server_cpu_ns"`
}

type latencySummary struct {
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// summarize takes nearest-rank percentiles; it sorts ds.
func summarize(ds []time.Duration) latencySummary {
	if len(ds) == 0 {
		return latencySummary{}
	}
	slices.Sort(ds)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.5) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return latencySummary{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ds[len(ds)-1]}
}

func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func (a *app) runBench(ctx context.Context, f benchFlags) error {
	if f.batch <= 0 || f.producers <= 0 {
		return errors.New("--batch and --producers must be positive")
	}
	cons, err := client.ParseConsistency(f.queryConsistency)
	if err != nil {
		return fmt.Errorf("--query-consistency: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The feed: generated on the fly by each producer, or a file loaded first.
	var (
		feed   func(ctx context.Context, out chan<- []client.Event)
		total  int
		source string
	)
	if f.file != "" {
		loaded, err := a.loadFile(f)
		if err != nil {
			return err
		}
		for _, b := range loaded {
			total += len(b)
		}
		source = fmt.Sprintf("%s (%d events)", f.file, total)
		feed = func(ctx context.Context, out chan<- []client.Event) {
			for _, b := range loaded {
				select {
				case out <- b:
				case <-ctx.Done():
					return
				}
			}
		}
	} else {
		if f.events <= 0 || f.items == 0 {
			return errors.New("--events and --items must be positive")
		}
		if f.zipfS <= 1 || f.zipfV < 1 {
			return errors.New("--zipf-s must be > 1 and --zipf-v >= 1")
		}
		total = f.events
		source = fmt.Sprintf("zipf(s=%g, v=%g) over %d items", f.zipfS, f.zipfV, f.items)
		feed = zipfFeed(f)
	}

	var bar interface {
		Add(int) error
		Finish() error
	}
	if f.progress {
		bar = newBar(a.stderr, int64(total), "bench", false)
	}
	stats := &ingestStats{}
	batches := make(chan []client.Event, f.producers) // one ready batch per producer, so generation overlaps sends
	var acked atomic.Int64
	var qlat []time.Duration
	var qerrs int
	queriesDone := make(chan struct{})
	loadDone := make(chan struct{})

	user0, sys0 := cpuTimes()
	server0, serverOK := a.serverCPU(ctx)
	start := time.Now()
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		defer close(batches)
		if f.rate <= 0 {
			feed(ctx, batches)
			return
		}
		paced(ctx, f.rate, feed, batches)
	}()
	go func() {
		defer close(queriesDone)
		qlat, qerrs = a.queryLoop(ctx, f, cons, loadDone)
	}()
	var hlat []time.Duration
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		if f.probeHealthz {
			hlat = a.healthzLoop(ctx, f.queryRate, loadDone)
		}
	}()
	perr := a.produce(ctx, f.producers, f.leaderboard, sendMode{f.perLeader, f.batch}, batches, stats, func(n int) {
		acked.Add(int64(n))
		if bar != nil {
			_ = bar.Add(n)
		}
	})
	elapsed := time.Since(start)
	if perr != nil {
		cancel()
	}
	close(loadDone)
	fwg.Wait()
	<-queriesDone
	<-healthDone
	user1, sys1 := cpuTimes()
	var serverCPU time.Duration
	if server1, ok := a.serverCPU(context.WithoutCancel(ctx)); ok && serverOK {
		serverCPU = server1 - server0
	}
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(a.stderr)
	}
	rep := benchReport{Source: source, Events: stats.sent, Batches: stats.batches, Accepted: stats.accepted,
		Rejected: stats.rejected, Duplicates: stats.duplicates, RetriedBatches: stats.retried, Producers: f.producers,
		BatchSize: f.batch, Elapsed: elapsed, EventsPerSecond: float64(stats.sent) / max(elapsed.Seconds(), 1e-9),
		Ack: summarize(stats.latencies), Queries: len(qlat), QueriesPerSec: float64(len(qlat)) / max(elapsed.Seconds(), 1e-9), QueryErrors: qerrs, QueryK: f.queryK, QueryLevel: cons.String(),
		Query: summarize(qlat), Healthz: summarize(hlat), HealthzProbes: len(hlat), CPUUser: user1 - user0, CPUSystem: sys1 - sys0, ServerCPU: serverCPU}
	if f.asJSON {
		if err := a.printJSON(rep); err != nil {
			return err
		}
	} else {
		a.printBench(rep, elapsed)
	}
	if perr != nil {
		return perr
	}
	return ctx.Err()
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms" }

func (a *app) printBench(r benchReport, elapsed time.Duration) {
	w := a.stdout
	fmt.Fprintf(w, "source        %s\n", r.Source)
	fmt.Fprintf(w, "load          %d producers, batches of %d\n", r.Producers, r.BatchSize)
	fmt.Fprintf(w, "acknowledged  %d events in %d batches in %v: %.0f events/s\n", r.Events, r.Batches,
		elapsed.Round(time.Millisecond), r.EventsPerSecond)
	fmt.Fprintf(w, "outcome       accepted %d, rejected %d, duplicate batches %d, retried batches %d\n",
		r.Accepted, r.Rejected, r.Duplicates, r.RetriedBatches)
	fmt.Fprintf(w, "ack latency   p50 %s  p90 %s  p99 %s  max %s (per batch)\n", ms(r.Ack.P50), ms(r.Ack.P90), ms(r.Ack.P99), ms(r.Ack.Max))
	if r.Queries+r.QueryErrors > 0 {
		fmt.Fprintf(w, "%-14sp50 %s  p99 %s  max %s (%d queries at %s consistency, %.0f/s, %d errors)\n", fmt.Sprintf("top-%d query", r.QueryK),
			ms(r.Query.P50), ms(r.Query.P99), ms(r.Query.Max), r.Queries, r.QueryLevel, r.QueriesPerSec, r.QueryErrors)
	}
	if r.HealthzProbes > 0 {
		fmt.Fprintf(w, "%-14sp50 %s  p99 %s  max %s (%d probes)\n", "/healthz", ms(r.Healthz.P50), ms(r.Healthz.P99), ms(r.Healthz.Max), r.HealthzProbes)
	}
	cpu := r.CPUUser + r.CPUSystem
	fmt.Fprintf(w, "client CPU    %v user + %v system = %v (%.2f cores on average)\n", r.CPUUser.Round(time.Millisecond),
		r.CPUSystem.Round(time.Millisecond), cpu.Round(time.Millisecond), cpu.Seconds()/max(elapsed.Seconds(), 1e-9))
	if r.ServerCPU > 0 {
		fmt.Fprintf(w, "server CPU    %v (%.2f cores on average; %.2f CPU-seconds per million acknowledged events)\n",
			r.ServerCPU.Round(time.Millisecond), r.ServerCPU.Seconds()/max(elapsed.Seconds(), 1e-9),
			r.ServerCPU.Seconds()/max(float64(r.Events), 1)*1e6)
	}
}

// queryLoop runs top-K queries at the given rate until done closes; it
// returns the latencies of the successful ones and the number of errors.
func (a *app) queryLoop(ctx context.Context, f benchFlags, cons client.Consistency, done <-chan struct{}) ([]time.Duration, int) {
	if f.queryWorkers > 0 {
		return a.queryWorkers(ctx, f, cons, done)
	}
	if f.queryRate <= 0 {
		return nil, 0
	}
	c, err := a.client()
	if err != nil {
		return nil, 1
	}
	defer c.Close(context.Background())
	t := time.NewTicker(time.Duration(float64(time.Second) / f.queryRate))
	defer t.Stop()
	var lat []time.Duration
	errs := 0
	for {
		select {
		case <-done:
			return lat, errs
		case <-ctx.Done():
			return lat, errs
		case <-t.C:
		}
		start := time.Now()
		if _, err := c.TopK(ctx, f.leaderboard, f.queryWindow, f.queryK, client.WithConsistency(cons)); err != nil {
			errs++
			continue
		}
		lat = append(lat, time.Since(start))
	}
}

// queryWorkers runs top-K queries back to back from f.queryWorkers
// goroutines sharing one client until done closes.
func (a *app) queryWorkers(ctx context.Context, f benchFlags, cons client.Consistency, done <-chan struct{}) ([]time.Duration, int) {
	c, err := a.client()
	if err != nil {
		return nil, 1
	}
	defer c.Close(context.Background())
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var wg sync.WaitGroup
	for range f.queryWorkers {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for {
				select {
				case <-done:
					mu.Lock()
					lat, errs = append(lat, mine...), errs+bad
					mu.Unlock()
					return
				default:
				}
				start := time.Now()
				if _, err := c.TopK(ctx, f.leaderboard, f.queryWindow, f.queryK, client.WithConsistency(cons)); err != nil {
					bad++
					if ctx.Err() != nil {
						<-done
					}
					continue
				}
				mine = append(mine, time.Since(start))
			}
		})
	}
	wg.Wait()
	return lat, errs
}

// healthzLoop GETs /healthz of the first node at rate until done closes:
// the same node's answer to a request that does no work, the floor for the
// query latencies measured beside it.
func (a *app) healthzLoop(ctx context.Context, rate float64, done <-chan struct{}) []time.Duration {
	if rate <= 0 {
		return nil
	}
	hc, scheme, err := a.plainHTTP()
	if err != nil {
		return nil
	}
	url := scheme + a.addrs()[0] + "/healthz"
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	var lat []time.Duration
	for {
		select {
		case <-done:
			return lat
		case <-ctx.Done():
			return lat
		case <-t.C:
		}
		start := time.Now()
		resp, err := hc.Get(url)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			lat = append(lat, time.Since(start))
		}
	}
}

// zipfFeed returns a feed generating f.events events in batches; it runs one
// generator per producer so that generation is not the bottleneck.
func zipfFeed(f benchFlags) func(ctx context.Context, out chan<- []client.Event) {
	return func(ctx context.Context, out chan<- []client.Event) {
		var wg sync.WaitGroup
		per, rem := f.events/f.producers, f.events%f.producers
		for p := range f.producers {
			n := per
			if p < rem {
				n++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(f.seed, uint64(p)))
				z := rand.NewZipf(rng, f.zipfS, f.zipfV, f.items-1)
				buf := make([]byte, 0, 32)
				for n > 0 {
					size := min(n, f.batch)
					b := make([]client.Event, size)
					for i := range b {
						buf = strconv.AppendUint(append(buf[:0], "item-"...), z.Uint64(), 10)
						b[i].Item = string(buf)
					}
					n -= size
					select {
					case out <- b:
					case <-ctx.Done():
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}

// loadFile reads the replay file into batches before the clock starts.
func (a *app) loadFile(f benchFlags) ([][]client.Event, error) {
	in, err := openInput(f.file, a.stdin)
	if err != nil {
		return nil, err
	}
	defer in.close()
	src, err := newSource(in, f.file, f.mapping)
	if err != nil {
		return nil, err
	}
	var out [][]client.Event
	batch := make([]client.Event, 0, f.batch)
	n := 0
	for f.events <= 0 || n < f.events {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.file, err)
		}
		batch = append(batch, e)
		n++
		if len(batch) == f.batch {
			out = append(out, batch)
			batch = make([]client.Event, 0, f.batch)
		}
	}
	if len(batch) > 0 {
		out = append(out, batch)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no events", f.file)
	}
	return out, nil
}

// paced forwards batches no faster than rate events per second, so latency
// can be measured at a fixed offered load (e.g. 115,000 events/s).
func paced(ctx context.Context, rate float64, feed func(context.Context, chan<- []client.Event), out chan<- []client.Event) {
	in := make(chan []client.Event, 1)
	go func() {
		defer close(in)
		feed(ctx, in)
	}()
	start := time.Now()
	var sent int
	for b := range in {
		if wait := time.Until(start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
		sent += len(b)
	}
}

// serverCPU sums the nodes' process_cpu_seconds_total; ok is false when a
// node does not answer with it.
func (a *app) serverCPU(ctx context.Context) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	hc, scheme, err := a.plainHTTP()
	if err != nil {
		return 0, false
	}
	var total float64
	for _, addr := range a.addrs() {
		if !strings.Contains(addr, "://") {
			addr = scheme + addr
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/metrics", nil)
		if err != nil {
			return 0, false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, false
		}
		found := false
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				found = err == nil
				total += f
				break
			}
		}
		resp.Body.Close()
		if !found {
			return 0, false
		}
	}
	return time.Duration(total * float64(time.Second)), true
}

// plainHTTP is a client for the unauthenticated endpoints (/healthz,
// /metrics), over TLS when --ca is given, and the scheme to use.
func (a *app) plainHTTP() (*http.Client, string, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	if a.caFile == "" {
		return hc, "http://", nil
	}
	cfg, err := client.LoadTLS(a.caFile, a.certFile, a.keyFile, a.serverName)
	if err != nil {
		return nil, "", err
	}
	hc.Transport = &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	return hc, "https://", nil
}
