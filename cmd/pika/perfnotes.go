package main

import "fmt"

// notes explain, in the text summary of pika perf (and the "notes" of the
// JSON one), why the counts of sent, confirmed and received messages
// differ: messages in flight when perf stopped, refused ones (nacked,
// returned), confirms not asked for, messages already in the queue.
func (s perfSummary) notes(cfg *perfConfig) []string {
	var notes []string
	if cfg.producers > 0 && s.Sent > 0 {
		settled := s.Confirmed + s.Nacked + s.Returned
		switch {
		case cfg.confirm == 0:
			notes = append(notes, "confirmed is 0: publisher confirms are off (--confirm N turns them on), so nacks are not seen either")
		case settled < s.Sent:
			notes = append(notes, fmt.Sprintf("%d of %d sent were neither confirmed, nacked nor returned: in flight (unconfirmed) when perf stopped; their outcome is unknown", s.Sent-settled, s.Sent))
		}
		if s.Nacked > 0 {
			notes = append(notes, fmt.Sprintf("%d nacked: the broker refused them (e.g. a full queue with x-overflow reject-publish); they are not in the queue", s.Nacked))
		}
		if s.Returned > 0 {
			notes = append(notes, fmt.Sprintf("%d returned: unroutable (--mandatory and no queue for the routing key); they are not in the queue", s.Returned))
		}
	}
	accepted := s.Sent - min(s.Sent, s.Nacked+s.Returned)
	switch {
	case cfg.consumers == 0:
		if s.Sent > 0 {
			notes = append(notes, "received is 0: no consumers (--consumers 0)")
		}
	case cfg.producers == 0:
	case s.Received < accepted:
		notes = append(notes, fmt.Sprintf("%d of the %d sent and not refused were not received: still in the queue, or in flight, when perf stopped", accepted-s.Received, accepted))
	case s.Received > accepted:
		notes = append(notes, fmt.Sprintf("%d more received than sent and not refused: the queue held messages before the run, or others publish to it", s.Received-accepted))
	}
	return notes
}
