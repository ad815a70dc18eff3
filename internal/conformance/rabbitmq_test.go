package conformance

import (
	"testing"

	"github.com/pika-go/pika/internal/testenv"
)

// TestRabbitMQ runs the whole table against the real broker: the reference
// the table was written from. No scenario disturbs the broker's global
// state, so the shared broker lock is enough.
func TestRabbitMQ(t *testing.T) {
	t.Parallel()
	Run(t, testenv.Broker(t))
}
