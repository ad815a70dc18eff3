// Package wire encodes and decodes AMQP 0-9-1 as RabbitMQ speaks it: frames,
// the arguments of every method of every class (RabbitMQ's extensions
// included), content headers with the 14 basic properties, and field tables
// with every value type.
//
// The package does no I/O policy and starts no goroutines. Encoders append to
// a caller's byte slice and decoders read from one, so a connection can reuse
// its buffers and decode into values it keeps: publishing a message and
// receiving a delivery allocate nothing once warm. [FrameReader] is the one
// convenience over an [io.Reader].
//
// # Frames
//
// [ParseFrame] splits one frame off the front of a byte slice (or says that
// more bytes are needed), checking the frame type, the size limit (AMQP's
// frame_max, which counts the 8 bytes of frame header and frame-end) and
// the frame-end octet. [AppendMethodFrame], [AppendHeaderFrame],
// [AppendBodyFrames], [AppendHeartbeatFrame] and [AppendMessage] write
// frames, patching each frame's size in place.
//
// Method payloads decode with [DecodeMethod] (a new value each time) or a
// [MethodDecoder] (one reused value per method id); [PeekMethodID] reads just
// the ids. Content headers decode with [ContentHeader.Decode]. Each method is
// a struct type, such as [BasicPublish], implementing [Method]; the ids,
// names, directions and synchronous replies of the methods are generated
// from the spec (see [MethodID]).
//
// # Lifetimes
//
//   - A [Frame] from [ParseFrame] aliases the input slice; a Frame from
//     [FrameReader.ReadFrame] aliases the reader's buffer and is valid only
//     until the next ReadFrame.
//   - Decoded methods, content headers and tables never alias their input:
//     strings are copied (or kept from the previous decode into the same
//     value when equal), and byte-array table values are copied. A frame's
//     buffer can be reused as soon as it is decoded.
//   - A value returned by [MethodDecoder.Decode] is overwritten by the next
//     Decode of the same method id through that decoder.
//   - Encoders never retain their arguments.
//
// # Field tables
//
// A [Table] maps names to values of these Go types, one per AMQP field type
// (RabbitMQ's type octets, which differ from the table in the 0-9-1 PDF):
//
//	octet  AMQP type                  Go type
//	't'    boolean                    bool
//	'b'    signed 8-bit               int8
//	'B'    unsigned 8-bit             uint8
//	's'    signed 16-bit              int16
//	'u'    unsigned 16-bit            uint16
//	'I'    signed 32-bit              int32
//	'i'    unsigned 32-bit            uint32
//	'l'    signed 64-bit              int64
//	'f'    32-bit float               float32
//	'd'    64-bit float               float64
//	'D'    decimal                    Decimal
//	'S'    long string                string
//	'x'    byte array                 []byte
//	'A'    field array                []any
//	'T'    timestamp (seconds)        time.Time (UTC)
//	'F'    nested field table         Table
//	'V'    void                       nil
//
// Encoding also accepts int, uint and uint64 (as 'l', when the value fits)
// and map[string]any (as 'F'). A time.Time is sent as whole seconds since
// the epoch, its sub-second part truncated, like Properties.Timestamp; a time
// before 1970 is an error. Other values that cannot be represented exactly
// are errors rather than silently changed. Keys are encoded in sorted order, so equal tables encode
// to equal bytes. A table on the wire that repeats a key is rejected.
//
// # Limits
//
// Every length read from the input is checked against the bytes that remain
// before it is used, so bad input never causes a large allocation or a
// panic. Frames are limited by the caller's frame size (default
// [DefaultMaxFrameSize]) and [FrameReader] grows its buffer only as bytes
// actually arrive. Tables and arrays may nest [MaxTableDepth] deep and hold
// [MaxTableEntries] values each. [ContentHeader.Decode] takes a maximum body
// size.
//
// # Errors
//
// Every error from this package (other than I/O errors passed through from
// an [io.Reader]) is an [*Error] wrapping one of the sentinel errors such as
// [ErrTruncated] or [ErrFrameTooLarge]; test the kind with [errors.Is]. The
// Error says where: the frame type and channel when known, the method, the
// byte offset (within the frame for frame errors, within the payload for
// payload errors; -1 when encoding), and in Detail the argument or table key
// path involved, such as `arguments: key "x-args"."inner"[2]`.
//
// # Concurrency
//
// Functions are safe for concurrent use. Values ([FrameReader],
// [MethodDecoder], [ContentHeader], method structs, [Table]) are not: use
// one per goroutine, or synchronise.
package wire
