package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/pikatest"
)

// TestPerfRPCClientDialFailureReturns: when the client's connection
// cannot be opened after the servers started, pika perf rpc stops the
// servers and returns the error instead of waiting for them forever.
func TestPerfRPCClientDialFailureReturns(t *testing.T) {
	b := pikatest.NewBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pika.Dial(ctx, b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ctx, "rpc", pika.QueueDeclareOptions{}); err != nil {
		t.Fatal(err)
	}

	// A proxy that lets the first connection (the server's) through and
	// refuses the next (the client's).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var n atomic.Int32
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if n.Add(1) > 1 {
				nc.Close()
				continue
			}
			up, err := b.Dial(ctx, "tcp", b.Addr())
			if err != nil {
				nc.Close()
				continue
			}
			go func() { io.Copy(up, nc); up.Close() }()
			go func() { io.Copy(nc, up); nc.Close() }()
		}
	}()
	url := strings.Replace(b.URL(), b.Addr(), ln.Addr().String(), 1)
	var stdout, stderr bytes.Buffer
	r := &perfRun{e: &env{stdout: &stdout, stderr: &stderr, url: url}, queue: "rpc", failed: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- r.runCalls(ctx, &perfRPCConfig{callers: 1, servers: 1, concurrency: 1, callTimeout: time.Second, duration: time.Second})
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("runCalls succeeded without a client connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runCalls did not return after the client's dial failed")
	}
}
