package pikatest_test

import (
	"testing"

	"github.com/pika-go/pika/internal/conformance"
	"github.com/pika-go/pika/pikatest"
)

// TestConformance runs the conformance suite, the scenarios that pin down
// RabbitMQ 3.10's behaviour and that CI also runs against RabbitMQ, against
// a pikatest broker.
func TestConformance(t *testing.T) {
	b := pikatest.NewBroker(t)
	conformance.Run(t, b.URL())
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
