package pika

import (
	"math/rand/v2"
	"testing"
)

// simMsg is one mandatory message in the broker simulation.
type simMsg struct {
	tag    uint64
	sig    uint64
	routed bool // a queue took it; otherwise the broker returns it
	ready  bool // the broker may confirm it
	acked  bool // its confirmation was sent
}

// TestReturnMatcherNeverWrong runs random conversations that respect what
// RabbitMQ guarantees (returns in publish order, each before the
// confirmation covering its message; routed messages confirmed in any order,
// singly or as multiple acks once every earlier one is ready) and checks
// that the matcher never calls a routed message returned nor a returned one
// delivered, and that every message gets a verdict. With signatures all
// different it must never be unsure.
func TestReturnMatcherNeverWrong(t *testing.T) {
	for _, sigs := range []int{1, 2, 3, 1000000} {
		maybes, total := 0, 0
		for seed := uint64(0); seed < 300; seed++ {
			m, n := runReturnSim(t, seed, sigs)
			maybes += m
			total += n
		}
		t.Logf("%d signatures: %d of %d messages resolved as maybe-returned", sigs, maybes, total)
		if sigs == 1000000 && maybes != 0 {
			t.Errorf("distinct messages: %d maybe-returned verdicts, want 0", maybes)
		}
	}
}

func runReturnSim(t *testing.T, seed uint64, sigs int) (maybes, total int) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, uint64(sigs)))
	var (
		m         returnMatcher
		msgs      []*simMsg // by tag-1
		processed int       // messages the broker has handled
		verdicts  = map[uint64]verdict{}
		unroutedP = r.Float64()
	)
	outstanding := func() []*simMsg {
		var out []*simMsg
		for _, x := range msgs {
			if _, done := verdicts[x.tag]; !done && !x.acked {
				out = append(out, x)
			}
		}
		return out
	}
	resolve := func(tag uint64, ret *Return) {
		x := msgs[tag-1]
		if x.routed {
			t.Fatalf("seed %d sigs %d: routed message %d resolved as returned", seed, sigs, tag)
		}
		if _, done := verdicts[tag]; done {
			t.Fatalf("seed %d: message %d resolved twice", seed, tag)
		}
		verdicts[tag] = wasReturned
	}
	candidates := func(sig uint64) []uint64 {
		var tags []uint64
		for _, x := range msgs {
			// The client's view: not confirmed, not attributed.
			if _, done := verdicts[x.tag]; !done && !x.acked && x.sig == sig {
				tags = append(tags, x.tag)
			}
		}
		return tags
	}
	confirm := func(x *simMsg) {
		x.acked = true
		if _, done := verdicts[x.tag]; done {
			return
		}
		v := m.confirmed(x.tag, x.sig, resolve)
		switch v {
		case notReturned:
			if !x.routed {
				t.Fatalf("seed %d sigs %d: returned message %d resolved as delivered", seed, sigs, x.tag)
			}
		case maybeReturned:
			maybes++
		}
		verdicts[x.tag] = v
	}
	const n = 60
	for steps := 0; steps < 100000 && len(verdicts) < n; steps++ {
		switch r.IntN(4) {
		case 0: // the client publishes
			if len(msgs) < n {
				x := &simMsg{tag: uint64(len(msgs) + 1), sig: uint64(r.IntN(sigs)), routed: r.Float64() > unroutedP}
				msgs = append(msgs, x)
				m.published(x.tag, x.sig)
			}
		case 1: // the broker handles the next publish
			if processed < len(msgs) {
				x := msgs[processed]
				processed++
				if !x.routed {
					ret := &Return{}
					m.returned(x.sig, uint64(len(msgs)), ret, candidates, resolve)
					x.ready = true
				}
			}
		case 2: // a queue confirms a routed message
			var pend []*simMsg
			for _, x := range msgs[:processed] {
				if x.routed && !x.ready {
					pend = append(pend, x)
				}
			}
			if len(pend) > 0 {
				pend[r.IntN(len(pend))].ready = true
			}
		case 3: // the broker sends a confirmation
			var ready []*simMsg
			for _, x := range msgs[:processed] {
				if x.ready && !x.acked {
					ready = append(ready, x)
				}
			}
			if len(ready) == 0 {
				break
			}
			pick := ready[r.IntN(len(ready))]
			multiple := true
			for _, x := range msgs[:pick.tag] {
				if !x.acked && !x.ready {
					multiple = false
				}
			}
			if multiple && r.IntN(2) == 0 {
				for _, x := range msgs[:pick.tag] {
					if !x.acked {
						confirm(x)
					}
				}
			} else {
				confirm(pick)
			}
		}
	}
	if len(verdicts) != n {
		t.Fatalf("seed %d sigs %d: %d of %d messages resolved (outstanding %d)", seed, sigs, len(verdicts), n, len(outstanding()))
	}
	if m.active() {
		t.Fatalf("seed %d sigs %d: returns still pending after every message was confirmed", seed, sigs)
	}
	return maybes, n
}

// TestReturnMatcherOrderings walks the exact orderings the broker allows for
// two identical mandatory messages and checks each verdict.
func TestReturnMatcherOrderings(t *testing.T) {
	// Steps: "ret" (a return arriving after both were published), "ack1",
	// "ack2", "ackm" (a multiple ack up to 2).
	cases := []struct {
		name  string
		steps []string
		want  map[uint64]verdict
	}{
		// Only one candidate left when the return arrives: certain.
		{"first acked, then return", []string{"ack1", "ret", "ack2"}, map[uint64]verdict{1: notReturned, 2: wasReturned}},
		// Two returns for two identical messages: both certain.
		{"two returns then multiple ack", []string{"ret", "ret", "ackm"}, map[uint64]verdict{1: wasReturned, 2: wasReturned}},
		// One return, two candidates, one multiple ack: unknowable.
		{"one return then multiple ack", []string{"ret", "ackm"}, map[uint64]verdict{1: maybeReturned, 2: maybeReturned}},
		// One return, then single acks: the first is unknowable; once it is
		// gone, the return can still be the second's.
		{"one return, ack 2, ack 1", []string{"ret", "ack2", "ack1"}, map[uint64]verdict{2: maybeReturned, 1: maybeReturned}},
		// No return before the ack: delivered.
		{"acks without return", []string{"ack1", "ack2"}, map[uint64]verdict{1: notReturned, 2: notReturned}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m returnMatcher
			got := map[uint64]verdict{}
			acked := map[uint64]bool{}
			m.published(1, 9)
			m.published(2, 9)
			resolve := func(tag uint64, _ *Return) { got[tag] = wasReturned }
			cands := func(uint64) []uint64 {
				var out []uint64
				for _, tag := range []uint64{1, 2} {
					if _, ok := got[tag]; !ok && !acked[tag] {
						out = append(out, tag)
					}
				}
				return out
			}
			ack := func(tag uint64) {
				acked[tag] = true
				if _, ok := got[tag]; !ok {
					got[tag] = m.confirmed(tag, 9, resolve)
				}
			}
			for _, s := range tc.steps {
				switch s {
				case "ret":
					m.returned(9, 2, &Return{}, cands, resolve)
				case "ack1":
					ack(1)
				case "ack2":
					ack(2)
				case "ackm":
					ack(1)
					ack(2)
				}
			}
			for tag, w := range tc.want {
				if got[tag] != w {
					t.Errorf("message %d: verdict %d, want %d", tag, got[tag], w)
				}
			}
			if m.active() {
				t.Error("returns still pending at the end")
			}
		})
	}
}
