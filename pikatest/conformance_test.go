package pikatest_test

import (
	"context"
	"flag"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pika-go/pika/internal/conformance"
	"github.com/pika-go/pika/pikatest"
)

// overTCP makes TestConformance connect over TCP, to compare the transports
// (scripts/conformance_speed.sh).
var overTCP = flag.Bool("pikatest.tcp", false, "run TestConformance over TCP instead of the in-memory transport")

// TestConformance runs the conformance suite, the scenarios that pin down
// RabbitMQ 3.10's behaviour and that CI also runs against RabbitMQ, against
// a pikatest broker, through its in-memory transport (Broker.Dial).
// Every connection of the run must go through Broker.Dial: a scenario that
// dialled TCP on its own would make the run slower without a word.
func TestConformance(t *testing.T) {
	b := pikatest.NewBroker(t)
	var dials atomic.Uint64
	tg := conformance.Target{URL: b.URL(), Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return b.Dial(ctx, network, addr)
	}}
	if *overTCP {
		tg.Dial = nil
	}
	conformance.RunTarget(t, tg)
	if served := pikatest.ConnectionsServed(b); !*overTCP && served != dials.Load() {
		t.Errorf("the broker served %d connections, %d of them through Broker.Dial: some scenario dials TCP itself", served, dials.Load())
	}
}

// TestConformanceTCP runs the scenarios of the handshake and of frames,
// most of them written frame by frame over the socket, over TCP, so that
// the broker's TCP path stays checked by the suite too (the alarm and
// restart tables run over TCP as well).
func TestConformanceTCP(t *testing.T) {
	b := pikatest.NewBroker(t)
	conformance.RunTarget(t, conformance.Target{URL: b.URL(), Only: func(s conformance.Scenario) bool {
		return strings.HasPrefix(s.Name, "connection/") || strings.HasPrefix(s.Name, "frame/")
	}})
}

// TestConformanceAlarm runs the scenarios of blocked connections with the
// broker's memory alarm.
func TestConformanceAlarm(t *testing.T) {
	b := pikatest.NewBroker(t)
	conformance.RunAlarm(t, b.URL(), func(t *testing.T, on bool) { b.SetAlarm(on) })
}

// TestConformanceRestart runs the scenarios of a broker restart: durable
// entities and persistent messages survive, the rest goes.
func TestConformanceRestart(t *testing.T) {
	b := pikatest.NewBroker(t)
	conformance.RunRestart(t, b.URL(), func(t *testing.T) { b.Restart() })
}
