// Package plugintest holds the helpers that the tests of the plugin
// modules (plugins/otelpika, plugins/prompika) share: dialling the test
// broker with hooks, and declaring a queue deleted after the test.
package plugintest

import (
	"context"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// Dial connects to url with hooks and opens a channel; the connection is
// closed when the test ends.
func Dial(t testing.TB, url string, hooks ...pika.Hook) (*pika.Conn, *pika.Channel) {
	t.Helper()
	cfg, err := pika.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Hooks = hooks
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, ch
}

// Declare declares queue with args on ch, and deletes it (through a
// connection of its own) when the test ends.
func Declare(t testing.TB, ch *pika.Channel, queue string, args pika.Table) {
	t.Helper()
	if _, err := ch.QueueDeclare(context.Background(), queue, pika.QueueDeclareOptions{Arguments: args}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, dch := Dial(t, testenv.URL())
		dch.QueueDelete(context.Background(), queue, pika.QueueDeleteOptions{})
	})
}
