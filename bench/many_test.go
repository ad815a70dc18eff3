package main

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
)

// The tally classifies every outcome, and a result passes its check only
// when every scheduled message was published and confirmed.
func TestManyTallyAndCheck(t *testing.T) {
	tl := newTally(6)
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tl.sent(nil)
		}()
	}
	wg.Wait()
	tl.sent(errors.New("publish refused")) // the sixth: allSent closes
	select {
	case <-tl.allSent:
	default:
		t.Fatal("allSent not closed after 6 publish calls")
	}
	tl.outcome(nil)
	tl.outcome(nil)
	tl.outcome(pika.ErrNacked)
	tl.outcome(fmt.Errorf("%w: %w", pika.ErrOutcomeUnknown, pika.ErrClosed))
	select {
	case <-tl.allSettled:
		t.Fatal("allSettled closed with one outcome missing")
	default:
	}
	var r manyResult
	r.Client = "x"
	tl.fill(&r)
	if r.Expected != 6 || r.Published != 5 || r.Confirmed != 2 || r.Nacked != 1 || r.Failed != 2 || r.Unsettled != 1 {
		t.Errorf("counts %+v", r)
	}
	if r.FirstErr != "publish refused" {
		t.Errorf("first error %q", r.FirstErr)
	}
	err := r.check()
	if err == nil || !strings.Contains(err.Error(), "6 scheduled, 5 published, 2 confirmed, 1 nacked, 2 failed, 1 without an outcome") {
		t.Errorf("check: %v", err)
	}
	tl.outcome(nil)
	select {
	case <-tl.allSettled:
	default:
		t.Error("allSettled not closed after the last outcome")
	}

	good := manyResult{Expected: 3, Published: 3, Confirmed: 3}
	if err := good.check(); err != nil {
		t.Errorf("all confirmed: %v", err)
	}
	for name, bad := range map[string]manyResult{
		"one unpublished": {Expected: 3, Published: 2, Confirmed: 2},
		"one nacked":      {Expected: 3, Published: 3, Confirmed: 2, Nacked: 1},
		"one unsettled":   {Expected: 3, Published: 3, Confirmed: 2, Unsettled: 1},
		"a lost conn":     {Expected: 3, Published: 3, Confirmed: 3, Lost: "gone"},
	} {
		if bad.check() == nil {
			t.Errorf("%s: check passed", name)
		}
	}
}

// The schedule spreads the connections over the first period, and bad
// parameters are refused with the flag they came from.
func TestManyParams(t *testing.T) {
	p := manyParams{conns: 4, rate: 10, duration: 3 * time.Second, drain: time.Second, body: 10, maxLen: 10}
	if err := p.validate(); err != nil {
		t.Fatal(err)
	}
	if p.perConn() != 30 {
		t.Errorf("perConn %d, want 30", p.perConn())
	}
	t0 := time.Unix(100, 0)
	if got := p.due(t0, 2, 3).Sub(t0); got != 350*time.Millisecond {
		t.Errorf("due(2, 3) = t0+%v, want t0+350ms", got)
	}
	for flag, bad := range map[string]manyParams{
		"-many ":           {conns: 0, rate: 10, duration: time.Second, drain: time.Second, maxLen: 1},
		"-many-rate":       {conns: 1, rate: 0, duration: time.Second, drain: time.Second, maxLen: 1},
		"-many-duration":   {conns: 1, rate: 1, duration: time.Millisecond, drain: time.Second, maxLen: 1},
		"-many-duration ":  {conns: 1, rate: 1e6, duration: 1 << 62, drain: time.Second, maxLen: 1},
		"-many-drain":      {conns: 1, rate: 1, duration: time.Second, maxLen: 1},
		"-many-max-length": {conns: 1, rate: 1, duration: time.Second, drain: time.Second},
	} {
		if err := bad.validate(); err == nil || !strings.HasPrefix(err.Error(), flag) {
			t.Errorf("%s: validate says %v", flag, err)
		}
	}
}

// Every client of the many mode publishes its schedule against the broker
// and gets every confirmation (a small run: 5 connections, 20 msg/s each
// for 0.5 s).
func TestManyBroker(t *testing.T) {
	url := brokerOrSkip(t)
	p := manyParams{conns: 5, rate: 20, duration: 500 * time.Millisecond, drain: 30 * time.Second, body: 100, maxLen: 100}
	for _, c := range []string{"loop", "loop-fallback", cPika, cAMQP091} {
		t.Run(c, func(t *testing.T) {
			res, err := measureMany(c, url, p)
			if err != nil {
				t.Fatal(err)
			}
			if err := res.check(); err != nil {
				t.Fatal(err)
			}
			if res.Expected != 50 || res.Goroutines < 1 || res.RSSBytes <= 0 || res.CPUSeconds <= 0 {
				t.Errorf("implausible result %+v", res)
			}
		})
	}
	if _, err := measureMany("nope", url, p); err == nil {
		t.Error("an unknown client: no error")
	}
}
