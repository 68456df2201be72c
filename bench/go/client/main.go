// Command client drives the Go net/rpc peer of the Switchboard benchmark: a
// closed loop of -callers goroutines sharing one rpc.Client (one connection,
// multiplexed, as Go programs use net/rpc), each sending its next call when
// the previous one answers.
//
// After -warmup, the calls that complete within the next -duration are
// counted and their latencies recorded. The result is one JSON object on
// standard output:
//
//	{"calls": N, "errors": N, "first_error": "...", "histogram_ns": [[ns, count], ...]}
//
// Latencies are rounded to 3 significant digits (the precision of the
// harness's HDR histograms). The exit status is 1 if any call failed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/rpc"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"switchboard.invalid/bench/go/echo"
)

type result struct {
	Calls       uint64      `json:"calls"`
	Errors      uint64      `json:"errors"`
	FirstError  string      `json:"first_error,omitempty"`
	HistogramNs [][2]uint64 `json:"histogram_ns"`
}

// shared is what the callers report into.
type shared struct {
	stop       atomic.Bool
	errors     atomic.Uint64
	mu         sync.Mutex
	firstError string
}

func (s *shared) fail(err error) {
	s.errors.Add(1)
	s.stop.Store(true)
	s.mu.Lock()
	if s.firstError == "" {
		s.firstError = err.Error()
	}
	s.mu.Unlock()
}

func main() {
	addr := flag.String("addr", "", "server address")
	payload := flag.Int("payload", 128, "payload bytes per call")
	callers := flag.Int("callers", 1, "concurrent callers")
	warmup := flag.Duration("warmup", time.Second, "warm-up before measuring")
	duration := flag.Duration("duration", 5*time.Second, "measured time")
	grace := flag.Duration("grace", 10*time.Second, "how long calls may be outstanding after the measured time before the run fails as stalled")
	flag.Parse()
	if *addr == "" || *payload < 0 || *callers < 1 {
		fmt.Fprintln(os.Stderr, "usage: client -addr HOST:PORT [-payload N] [-callers N] [-warmup D] [-duration D]")
		os.Exit(2)
	}

	client, err := rpc.Dial("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot connect to %s: %v\n", *addr, err)
		os.Exit(1)
	}
	defer client.Close()

	var s shared
	start := time.Now()
	measureFrom := start.Add(*warmup)
	end := measureFrom.Add(*duration)
	samples := make([][]time.Duration, *callers)
	var wg sync.WaitGroup
	for i := 0; i < *callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			samples[i] = caller(client, &s, uint64(i)<<40, *payload, measureFrom, end)
		}(i)
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(end) + *grace):
		s.fail(fmt.Errorf("stalled: calls still unanswered %v after the measured time ended", *grace))
		report(&s, nil) // the samples are still being written: report none
		os.Exit(1)
	}
	report(&s, samples)
	if s.errors.Load() > 0 {
		os.Exit(1)
	}
}

// caller runs one closed loop until end and returns the latencies of the
// calls that completed in [measureFrom, end].
func caller(client *rpc.Client, s *shared, firstId uint64, payload int, measureFrom, end time.Time) []time.Duration {
	msg := echo.Message{Id: firstId, Name: "benchmark", Payload: make([]byte, payload)}
	for i := range msg.Payload {
		msg.Payload[i] = byte(i*31 + 7)
	}
	var latencies []time.Duration
	for !s.stop.Load() {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		msg.Id++
		var reply echo.Message
		if err := client.Call("Echo.Echo", &msg, &reply); err != nil {
			s.fail(fmt.Errorf("Echo.Echo: %w", err))
			break
		}
		if reply.Id != msg.Id || len(reply.Payload) != payload {
			s.fail(fmt.Errorf("bad echo: id %d, %d payload bytes; sent id %d, %d bytes", reply.Id, len(reply.Payload), msg.Id, payload))
			break
		}
		t1 := time.Now()
		if !t1.Before(measureFrom) && !t1.After(end) {
			latencies = append(latencies, t1.Sub(t0))
		}
	}
	return latencies
}

// report prints the result as JSON on stdout.
func report(s *shared, samples [][]time.Duration) {
	counts := map[uint64]uint64{}
	var calls uint64
	for _, latencies := range samples {
		for _, d := range latencies {
			counts[round3(uint64(d.Nanoseconds()))]++
			calls++
		}
	}
	r := result{Calls: calls, Errors: s.errors.Load(), HistogramNs: [][2]uint64{}}
	s.mu.Lock()
	r.FirstError = s.firstError
	s.mu.Unlock()
	for v, n := range counts {
		r.HistogramNs = append(r.HistogramNs, [2]uint64{v, n})
	}
	out, err := json.Marshal(r)
	if err != nil {
		fmt.Fprintf(os.Stderr, "encode result: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

// round3 rounds v to 3 significant digits.
func round3(v uint64) uint64 {
	if v < 1000 {
		return v
	}
	scale := uint64(math.Pow10(int(math.Floor(math.Log10(float64(v)))) - 2))
	return (v + scale/2) / scale * scale
}
