package recovery

import "github.com/pika-go/pika/wire"

// AppendKept appends to b the content of a message kept for republishing
// after a loss: its headers table, encoded (so that a table, or a table in
// it, that the application changes after publishing does not change the
// copy), then its body. It returns the buffer and the length of the
// encoded headers, 0 for none. Both clients keep their copies so.
func AppendKept(b []byte, headers wire.Table, body []byte) ([]byte, int) {
	hdrLen := 0
	if headers != nil {
		// The engine encoded the same table a moment ago: it cannot fail.
		b, _ = wire.AppendTable(b, headers)
		hdrLen = len(b)
	}
	return append(b, body...), hdrLen
}

// Kept returns the headers (a new table, nil for none) and the body of a
// copy made by AppendKept.
func Kept(buf []byte, hdrLen int) (wire.Table, []byte, error) {
	var headers wire.Table
	if hdrLen > 0 {
		t, err := wire.DecodeTable(buf[:hdrLen])
		if err != nil {
			return nil, nil, err
		}
		headers = t
	}
	return headers, buf[hdrLen:], nil
}
