package pika

import (
	"reflect"
	"runtime"
)

// Inline handlers (ConsumeOptions.Inline): the handler of such a consumer
// runs on its connection's reader goroutine. After each socket read the
// reader dispatches the engine's events under the connection's lock as
// usual (deliveries go to their consumer's buffer, with the same limits as
// any consumer's), then releases the lock and calls the inline handlers of
// the consumers that received something, before it reads again. So a read
// that brought ten deliveries costs one goroutine instead of two, and no
// wake-up between them.

// inlineReadyLocked notes that an inline consumer has buffered deliveries
// for the reader to hand over after the current read.
func (c *Conn) inlineReadyLocked(cons *Consumer) {
	if !cons.inlineReady {
		cons.inlineReady = true
		c.inlineReady = append(c.inlineReady, cons)
	}
}

// runInlineLocked runs the inline handlers of the consumers noted by
// inlineReadyLocked. Called by the reader with c.mu held; it releases the
// lock while the handlers run (user code never runs under it) and takes it
// again before returning.
func (c *Conn) runInlineLocked() {
	ready := c.inlineReady
	c.inlineReady = c.inlineSpare[:0]
	for _, cons := range ready {
		cons.inlineReady = false
	}
	// While a handler runs nothing is read: the timer must not take the
	// broker's bytes waiting in the socket for silence.
	c.readerBusy = true
	c.mu.Unlock()
	for _, cons := range ready {
		cons.deliverInline()
	}
	c.mu.Lock()
	c.readerBusy = false
	clear(ready)
	c.inlineSpare = ready
}

// deliverInline hands cons's buffered deliveries to its handler, one call
// at a time and in order, on the calling (reader) goroutine. A consumer
// that ended meanwhile is left to the goroutine endLocked started, which
// takes cons.inlineMu after the reader.
func (cons *Consumer) deliverInline() {
	c := cons.ch.conn
	cons.inlineMu.Lock()
	defer cons.inlineMu.Unlock()
	for {
		d, queue, _ := cons.take(false)
		if d == nil {
			return
		}
		if len(c.hk.delivery) > 0 {
			c.deliveryEvent(queue, d) // on the reader, like the inline handler
		}
		cons.handle(d)
	}
}

// deliverInlineName is the name of the function that calls inline
// handlers on the reader goroutine.
var deliverInlineName = runtime.FuncForPC(reflect.ValueOf((*Consumer).deliverInline).Pointer()).Name()

// onReader reports whether the caller is an inline handler running on l's
// reader goroutine: Close must not wait for that goroutine, nor for a
// recovery in progress (which waits for it, l being the link of its
// attempt); both end once the handler returns (l is closed by then). It
// walks the stack only while l's reader runs inline handlers.
func (c *Conn) onReader(l *link) bool {
	c.mu.Lock()
	busy := c.readerBusy && c.l == l
	c.mu.Unlock()
	return busy && onStack(deliverInlineName)
}
