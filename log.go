package pika

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pika-go/pika/internal/amqpdial"
	"github.com/pika-go/pika/wire"
)

// frameAttrs describes one frame for a Debug log record (see
// amqpdial.FrameAttrs, shared with package loop).
func frameAttrs(dir string, f wire.Frame) []any { return amqpdial.FrameAttrs(dir, f) }

// Log records go through a logQueue: the connection's goroutines build them
// (while holding the connection's lock, for frames received) and a
// goroutine of the queue's own hands them to the Logger's handler, which is
// application code and may be slow. A slow handler delays only logging;
// when it falls too far behind, records are dropped and a Warn record says
// how many.
const (
	logQueueRecords = 4096    // records waiting at most
	logQueueBytes   = 4 << 20 // and about this many bytes of decoded frames
	logRecordBytes  = 128     // what a record counts besides its frame
)

// logQueue hands log records to a handler, in order, on a goroutine of its
// own that runs while there is something to log.
type logQueue struct {
	h slog.Handler

	mu      sync.Mutex
	recs    []slog.Record
	bytes   int           // the sizes counted for recs
	sizes   []int         // each record's size, in step with recs
	dropped int           // records dropped since the last report
	running bool          // the goroutine runs
	idle    chan struct{} // closed when the goroutine exits
}

func newLogQueue(l *slog.Logger) *logQueue {
	if l == nil {
		return nil
	}
	return &logQueue{h: l.Handler()}
}

// add queues r, counting size bytes besides the record itself. It never
// blocks and never calls the handler.
func (q *logQueue) add(r slog.Record, size int) {
	size += logRecordBytes
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.recs) >= logQueueRecords || len(q.recs) > 0 && q.bytes+size > logQueueBytes {
		q.dropped++
		return
	}
	q.recs = append(q.recs, r)
	q.sizes = append(q.sizes, size)
	q.bytes += size
	if !q.running {
		q.running = true
		q.idle = make(chan struct{})
		go q.run(q.idle)
	}
}

func (q *logQueue) run(idle chan struct{}) {
	defer close(idle)
	ctx := context.Background()
	for {
		q.mu.Lock()
		if len(q.recs) == 0 {
			q.running = false
			q.recs, q.sizes = nil, nil
			q.mu.Unlock()
			return
		}
		r := q.recs[0]
		q.recs[0] = slog.Record{}
		q.recs = q.recs[1:]
		q.bytes -= q.sizes[0]
		q.sizes = q.sizes[1:]
		var report slog.Record
		if q.dropped > 0 && len(q.recs) == 0 {
			report = slog.NewRecord(time.Now(), slog.LevelWarn, "pika: log records dropped: the log handler fell behind the connection", 0)
			report.AddAttrs(slog.Int("dropped", q.dropped))
			q.dropped = 0
		}
		q.mu.Unlock()
		if q.h.Enabled(ctx, r.Level) {
			q.h.Handle(ctx, r)
		}
		if report.Level == slog.LevelWarn && q.h.Enabled(ctx, slog.LevelWarn) {
			q.h.Handle(ctx, report)
		}
	}
}

// wait waits until every record queued so far has been handled, or ctx
// ends.
func (q *logQueue) wait(ctx context.Context) {
	if q == nil {
		return
	}
	q.mu.Lock()
	idle := q.idle
	running := q.running
	q.mu.Unlock()
	if !running {
		return
	}
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// logAt queues a log record at level with msg and args (as for
// slog.Logger.Log). It may be called with the connection's lock held: the
// handler runs later, on the log queue's goroutine.
func (c *Conn) logAt(level slog.Level, msg string, args ...any) {
	if c.logs == nil {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.Add(args...)
	c.logs.add(r, 0)
}

// logInfo and logWarn are logAt at Info and Warn level.
func (c *Conn) logInfo(msg string, args ...any) { c.logAt(slog.LevelInfo, msg, args...) }
func (c *Conn) logWarn(msg string, args ...any) { c.logAt(slog.LevelWarn, msg, args...) }

// logFrame queues the Debug record of one frame.
func (c *Conn) logFrame(dir string, f wire.Frame) {
	r := slog.NewRecord(time.Now(), slog.LevelDebug, "amqp frame", 0)
	r.Add(frameAttrs(dir, f)...)
	size := 0
	if f.Type == wire.FrameMethod {
		size = len(f.Payload) // what the decoded fields hold, at most
	}
	c.logs.add(r, size)
}
