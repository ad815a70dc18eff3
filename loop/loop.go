package loop

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// ErrStopped is the error that callbacks of unfinished work get when Run
// returns (its ctx ended): pending dials, the connections still open, and
// their requests, publishes and consumers.
var ErrStopped = errors.New("loop: the loop stopped (Run returned)")

// errRunTwice is Run's error when the loop already ran or runs.
var errRunTwice = errors.New("loop: Run called twice: a Loop runs once")

// poller waits for descriptor readiness, timeouts and wake-ups. See
// poll_linux.go (epoll), poll_bsd.go (kqueue) and poll_other.go.
type poller interface {
	native() bool // descriptors can be watched
	add(fd int) error
	setWrite(fd int, on bool) error
	del(fd int)
	// wait waits at most timeout (negative: no limit) for a descriptor to be
	// ready or for wake, and calls fn for every ready descriptor.
	wait(timeout time.Duration, fn func(fd int, readable, writable bool)) error
	wake() // safe from any goroutine
	close()
}

// pollMillis converts a wait timeout to epoll's milliseconds, rounding up
// so that a loop never wakes before its timer and spins.
func pollMillis(d time.Duration) int {
	if d < 0 {
		return -1
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > 1<<30 {
		ms = 1 << 30
	}
	return int(ms)
}

// readBufferSize is the size of the one read buffer a Loop shares among
// its connections on the descriptor path.
const readBufferSize = 64 << 10

// Loop runs connections and callbacks on one goroutine: the one that calls
// Run. See the package documentation for the threading rule.
//
// Only Post is safe for concurrent use; every other method of Loop, and
// every method of Conn, Channel, Consumer, Delivery and Timer, must be
// called on the loop's goroutine (from a callback, a posted function or a
// timer), or before Run starts by the goroutine that then calls Run.
type Loop struct {
	p poller

	mu      sync.Mutex
	posted  []func()
	woken   bool // a wake-up is pending
	stop    bool // Run's ctx ended
	started bool
	ended   bool // Run returned: Post refuses

	// Owned by the loop goroutine.
	spare   []func()
	timers  timerHeap
	dirty   []*Conn // connections with events, output or callbacks to process
	later   []func()
	fds     map[int]*fdConn
	conns   map[*Conn]struct{}
	readBuf []byte
	server  wire.Table   // the server properties its connections share (see share.go)
	cfg     *pika.Config // the Config its connections share (see share.go)

	// base is cancelled when Run ends: dials in progress stop.
	base       context.Context
	cancelBase context.CancelFunc
	wg         sync.WaitGroup // the goroutines of dials and fallback transports
}

// New returns a Loop. Its descriptors (an epoll or kqueue instance and a
// wake-up descriptor) are released when Run returns; a Loop that is never
// run must not be dropped without Run, or they leak: call Run with a
// cancelled ctx to release them.
func New() (*Loop, error) {
	p, err := newPoller()
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	return &Loop{
		p:          p,
		fds:        make(map[int]*fdConn),
		conns:      make(map[*Conn]struct{}),
		base:       base,
		cancelBase: cancel,
	}, nil
}

// Poller names the readiness mechanism of this platform: "epoll",
// "kqueue", or "none" where every connection takes the fallback path.
func Poller() string { return pollerName }

// Post arranges for fn to run on the loop's goroutine, after the
// callbacks already posted. It is the one call that is safe from any
// goroutine. It reports false, and fn never runs, when Run has returned
// (or is returning).
func (l *Loop) Post(fn func()) bool {
	l.mu.Lock()
	if l.ended || l.stop {
		l.mu.Unlock()
		return false
	}
	l.posted = append(l.posted, fn)
	wake := !l.woken
	l.woken = true
	l.mu.Unlock()
	if wake {
		l.p.wake()
	}
	return true
}

// defer_ runs fn on the loop goroutine soon, from the loop rather than from
// inside the call that asks: callbacks never run inside the call that
// starts their work.
func (l *Loop) defer_(fn func()) { l.later = append(l.later, fn) }

// Run runs the loop on the calling goroutine until ctx ends, then stops:
// pending dials fail and the connections still open close at once (no
// close handshake), their callbacks getting ErrStopped, every goroutine the
// loop started has exited and every descriptor it opened is closed. It
// returns ctx's error, or an error of the poller (which stops the loop the
// same way). A Loop runs once.
func (l *Loop) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		return errRunTwice
	}
	l.started = true
	l.mu.Unlock()
	stopWatch := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.stop = true
		l.mu.Unlock()
		l.p.wake()
	})
	defer stopWatch()
	l.readBuf = make([]byte, readBufferSize)
	var err error
	for {
		l.runPosted()
		l.runTimers(time.Now())
		l.flush()
		l.mu.Lock()
		stop, pending := l.stop, len(l.posted) > 0
		l.mu.Unlock()
		if stop {
			err = ctx.Err()
			break
		}
		timeout := time.Duration(-1)
		if pending {
			timeout = 0
		} else if len(l.timers) > 0 {
			timeout = max(time.Until(l.timers[0].when), 0)
		}
		if err = l.p.wait(timeout, l.ready); err != nil {
			break
		}
		l.flush()
	}
	l.shutdown()
	return err
}

// runPosted runs the functions posted so far.
func (l *Loop) runPosted() {
	l.mu.Lock()
	fns := l.posted
	l.posted = l.spare[:0]
	l.woken = false
	l.mu.Unlock()
	for i, fn := range fns {
		fns[i] = nil
		fn()
		l.flush()
	}
	l.spare = fns[:0]
}

// ready handles one ready descriptor.
func (l *Loop) ready(fd int, readable, writable bool) {
	t := l.fds[fd]
	if t == nil {
		return
	}
	if writable {
		t.onWritable()
	}
	if readable && l.fds[fd] == t {
		t.onReadable()
	}
}

// markDirty queues c for processing at the loop's next flush.
func (l *Loop) markDirty(c *Conn) {
	if !c.inDirty {
		c.inDirty = true
		l.dirty = append(l.dirty, c)
	}
}

// flush processes every dirty connection and deferred callback until none
// is left: events to dispatch, callbacks to run in order, bytes to write,
// timers to move. Callbacks run here may make more work; it is done in
// the same flush.
func (l *Loop) flush() {
	for len(l.dirty) > 0 || len(l.later) > 0 {
		for len(l.later) > 0 {
			fns := l.later
			l.later = nil
			for _, fn := range fns {
				fn()
			}
		}
		for len(l.dirty) > 0 {
			c := l.dirty[0]
			l.dirty[0] = nil
			l.dirty = l.dirty[1:]
			c.inDirty = false
			c.process()
		}
	}
	if cap(l.dirty) > 1024 && len(l.dirty) == 0 {
		l.dirty = nil
	}
}

// shutdown ends everything when Run stops.
func (l *Loop) shutdown() {
	l.mu.Lock()
	l.stop = true
	l.mu.Unlock()
	l.cancelBase()
	// Posted functions may carry a dial's result: they must run to close
	// what the dial opened (Post refuses new ones from now on).
	l.runPosted()
	for c := range l.conns {
		c.abort(ErrStopped)
	}
	l.flush()
	l.mu.Lock()
	l.ended = true
	fns := l.posted
	l.posted = nil
	l.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
	l.flush()
	l.wg.Wait()
	// Goroutines that ended meanwhile may have posted their last words
	// before ended was set: nothing of theirs is left to run (the
	// transports are closed), but their functions release what they hold.
	l.mu.Lock()
	fns = l.posted
	l.posted = nil
	l.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
	for fd, t := range l.fds {
		t.closeNow()
		delete(l.fds, fd)
	}
	l.timers = nil
	l.p.close()
}

// Timer is a callback scheduled on a Loop with AfterFunc. Its methods must
// be called on the loop's goroutine.
type Timer struct {
	l     *Loop
	when  time.Time
	fn    func()
	index int // in the heap, or -1
}

// AfterFunc arranges for fn to run on the loop's goroutine once d has
// elapsed, and returns a Timer that can stop it. Timers that come due
// together run in the order of their deadlines.
func (l *Loop) AfterFunc(d time.Duration, fn func()) *Timer {
	t := &Timer{l: l, fn: fn, index: -1}
	t.schedule(time.Now().Add(d))
	return t
}

// Stop prevents the timer from running. It reports whether it stopped it
// (false: it ran already or was stopped).
func (t *Timer) Stop() bool {
	if t.index < 0 {
		return false
	}
	heap.Remove(&t.l.timers, t.index)
	return true
}

// Reset makes the timer run d from now, whether or not it ran or was
// stopped. It reports whether the timer was pending.
func (t *Timer) Reset(d time.Duration) bool {
	pending := t.index >= 0
	t.schedule(time.Now().Add(d))
	return pending
}

func (t *Timer) schedule(when time.Time) {
	t.when = when
	if t.index >= 0 {
		heap.Fix(&t.l.timers, t.index)
		return
	}
	heap.Push(&t.l.timers, t)
}

// runTimers runs the timers due at now.
func (l *Loop) runTimers(now time.Time) {
	for len(l.timers) > 0 && !l.timers[0].when.After(now) {
		t := heap.Pop(&l.timers).(*Timer)
		t.fn()
		l.flush()
	}
}

type timerHeap []*Timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when.Before(h[j].when) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
