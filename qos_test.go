package pika

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/pika-go/pika/wire"
)

func TestQosOptionsRanges(t *testing.T) {
	type qosCase struct {
		opts    QosOptions
		want    *wire.BasicQos
		errWord string // in the error when want is nil
	}
	tests := []qosCase{
		{QosOptions{}, &wire.BasicQos{}, ""},
		{QosOptions{PrefetchCount: 1}, &wire.BasicQos{PrefetchCount: 1}, ""},
		{QosOptions{PrefetchCount: math.MaxUint16, Global: true}, &wire.BasicQos{PrefetchCount: math.MaxUint16, Global: true}, ""},
		{QosOptions{PrefetchCount: math.MaxUint16 + 1}, nil, "PrefetchCount 65536"},
		{QosOptions{PrefetchCount: -1}, nil, "PrefetchCount -1"},
		{QosOptions{PrefetchSize: -1}, nil, "PrefetchSize -1"},
	}
	if strconv.IntSize == 64 {
		var maxSize int64 = math.MaxUint32 // a variable: the constant does not fit a 32-bit int
		tests = append(tests,
			qosCase{QosOptions{PrefetchSize: int(maxSize)}, &wire.BasicQos{PrefetchSize: math.MaxUint32}, ""},
			qosCase{QosOptions{PrefetchSize: int(maxSize + 1)}, nil, "PrefetchSize 4294967296"})
	}
	for _, tt := range tests {
		got, err := tt.opts.method()
		if tt.want == nil {
			if err == nil || !strings.Contains(err.Error(), tt.errWord) || !strings.Contains(err.Error(), "out of range") {
				t.Errorf("%+v: err %v, want one naming %q as out of range", tt.opts, err, tt.errWord)
			}
			continue
		}
		if err != nil || *got != *tt.want {
			t.Errorf("%+v: %+v, %v; want %+v", tt.opts, got, err, tt.want)
		}
	}
}

func TestQosSendsAndRecords(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx := context.Background()
	if err := ch.Qos(ctx, QosOptions{PrefetchCount: 10}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(ctx, QosOptions{PrefetchCount: 50, Global: true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(ctx, QosOptions{PrefetchCount: 70000}); err == nil {
		t.Fatal("Qos with PrefetchCount 70000 succeeded")
	}
	p.expectSent(t, &wire.BasicQos{PrefetchCount: 10}, &wire.BasicQos{PrefetchCount: 50, Global: true})
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch.qos == nil || ch.qos.PrefetchCount != 10 || ch.qosGlobal == nil || ch.qosGlobal.PrefetchCount != 50 {
		t.Errorf("recorded qos %+v and global qos %+v, want 10 and 50", ch.qos, ch.qosGlobal)
	}
}

func TestQosPrefetchSizeOnlyWhereImplemented(t *testing.T) {
	ctx := context.Background()
	t.Run("RabbitMQ", func(t *testing.T) {
		c, p := dialMethodsPeer(t, "RabbitMQ", nil)
		ch := peerChannel(t, c)
		err := ch.Qos(ctx, QosOptions{PrefetchSize: 4096})
		if err == nil || !strings.Contains(err.Error(), "PrefetchSize") || !strings.Contains(err.Error(), "RabbitMQ") {
			t.Fatalf("err = %v, want a refusal naming PrefetchSize and RabbitMQ", err)
		}
		if err := ch.Qos(ctx, QosOptions{PrefetchCount: 1}); err != nil {
			t.Fatal(err)
		}
		p.expectSent(t, &wire.BasicQos{PrefetchCount: 1})
	})
	t.Run("other broker", func(t *testing.T) {
		c, p := dialMethodsPeer(t, "OtherMQ", nil)
		ch := peerChannel(t, c)
		if err := ch.Qos(ctx, QosOptions{PrefetchSize: 4096}); err != nil {
			t.Fatal(err)
		}
		p.expectSent(t, &wire.BasicQos{PrefetchSize: 4096})
	})
}

func TestRecover(t *testing.T) {
	ctx := context.Background()
	t.Run("RabbitMQ", func(t *testing.T) {
		c, p := dialMethodsPeer(t, "RabbitMQ", nil)
		ch := peerChannel(t, c)
		if err := ch.Recover(ctx, false); err == nil || !strings.Contains(err.Error(), "requeue false") {
			t.Fatalf("Recover(false) on RabbitMQ: %v, want a refusal", err)
		}
		if err := ch.Recover(ctx, true); err != nil {
			t.Fatal(err)
		}
		p.expectSent(t, &wire.BasicRecover{Requeue: true})
	})
	t.Run("other broker", func(t *testing.T) {
		c, p := dialMethodsPeer(t, "OtherMQ", nil)
		ch := peerChannel(t, c)
		if err := ch.Recover(ctx, false); err != nil {
			t.Fatal(err)
		}
		p.expectSent(t, &wire.BasicRecover{})
	})
}

func TestTx(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
		if _, ok := m.(*wire.TxRollback); ok {
			p.closeChannel(ch, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - channel is not transactional", m)
			return
		}
		p.reply(ch, okReply(m))
	})
	ch := peerChannel(t, c)
	ctx := context.Background()
	if err := ch.TxSelect(ctx); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	tx := ch.tx
	c.mu.Unlock()
	if !tx {
		t.Error("tx.select not recorded for recovery")
	}
	if err := ch.TxCommit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ch.TxRollback(ctx); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("refused rollback: %v, want ErrPreconditionFailed", err)
	}
	p.expectSent(t, &wire.TxSelect{}, &wire.TxCommit{}, &wire.TxRollback{})
}
