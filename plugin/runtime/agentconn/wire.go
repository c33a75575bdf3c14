package agentconn

import (
	"encoding/binary"
	"errors"
	"math"
)

// Field numbers and wire types from api/agent/agent.proto.
const (
	wireVarint     = 0
	wireI64        = 1
	wireLen        = 2
	wireStartGroup = 3
	wireEndGroup   = 4
	wireI32        = 5

	// Request
	reqPrepare = 1
	reqRelease = 2
	reqTargets = 4
	reqBind    = 5
	// BindRequest
	bindContainerID = 1
	bindPid         = 2
	// TargetsRequest
	tgtContainer = 1
	// TargetsResponse
	tgtTargets = 1
	// PrepareRequest
	prepContainer    = 1
	prepAttach       = 2
	prepBeforeCreate = 3
	// Container
	ctrID          = 1
	ctrService     = 2
	ctrPid         = 3
	ctrRootfs      = 4
	ctrReadonly    = 5
	ctrUIDMappings = 6
	ctrGIDMappings = 7
	ctrOS          = 8
	ctrFacts       = 9
	// ContainerFacts
	factsPod                 = 1
	factsContainerdNamespace = 2
	factsImage               = 3
	// PodFacts
	podNamespace = 1
	// IDMapping
	mapContainerID = 1
	mapHostID      = 2
	mapSize        = 3
	// ReleaseRequest
	relContainerID = 1
	relPid         = 2
	relPidStart    = 3
	relNoReply     = 4
	// Response
	respError   = 1
	respPrepare = 2
	respRelease = 3
	respList    = 4
	respTargets = 5
	respBind    = 6
	// Error
	errCode    = 1
	errMessage = 2
	// PrepareResponse
	prepMounts = 1
	// MountPoint
	mpTarget  = 1
	mpFdIndex = 2
)

// The encoders follow proto3's rules as proto.Marshal applies them: fields
// in number order, zero values left out.

func appendTag(b []byte, field, wire int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire))
}

func appendVarint(b []byte, field int, v uint64) []byte {
	if v == 0 {
		return b
	}
	return binary.AppendUvarint(appendTag(b, field, wireVarint), v)
}

// appendInt32 encodes an int32 as protobuf does: a negative value is sign
// extended to 64 bits.
func appendInt32(b []byte, field int, v int32) []byte {
	return appendVarint(b, field, uint64(int64(v)))
}

func appendBool(b []byte, field int, v bool) []byte {
	if !v {
		return b
	}
	return appendVarint(b, field, 1)
}

func appendString(b []byte, field int, s string) []byte {
	if s == "" {
		return b
	}
	b = binary.AppendUvarint(appendTag(b, field, wireLen), uint64(len(s)))
	return append(b, s...)
}

// appendMessage encodes a submessage built by fn; present messages are
// written even when empty (a oneof member must be).
func appendMessage(b []byte, field int, fn func([]byte) []byte) []byte {
	inner := fn(nil)
	b = binary.AppendUvarint(appendTag(b, field, wireLen), uint64(len(inner)))
	return append(b, inner...)
}

func appendContainer(b []byte, c *Container) []byte {
	b = appendString(b, ctrID, c.ID)
	b = appendString(b, ctrService, c.Service)
	b = appendInt32(b, ctrPid, int32(c.Pid))
	b = appendString(b, ctrRootfs, c.Rootfs)
	b = appendBool(b, ctrReadonly, c.ReadonlyRootfs)
	for _, field := range []struct {
		n  int
		ms []IDMapping
	}{{ctrUIDMappings, c.UIDMappings}, {ctrGIDMappings, c.GIDMappings}} {
		for _, m := range field.ms {
			b = appendMessage(b, field.n, func(b []byte) []byte {
				b = appendVarint(b, mapContainerID, uint64(m.ContainerID))
				b = appendVarint(b, mapHostID, uint64(m.HostID))
				return appendVarint(b, mapSize, uint64(m.Size))
			})
		}
	}
	b = appendString(b, ctrOS, c.OS)
	if f := c.Facts; f != nil {
		b = appendMessage(b, ctrFacts, func(b []byte) []byte {
			if f.Pod != nil {
				// Present even when empty: an absent pod says "not a pod".
				b = appendMessage(b, factsPod, func(b []byte) []byte {
					return appendString(b, podNamespace, f.Pod.Namespace)
				})
			}
			b = appendString(b, factsContainerdNamespace, f.ContainerdNamespace)
			return appendString(b, factsImage, f.Image)
		})
	}
	return b
}

// encodePrepare encodes Request{prepare: PrepareRequest{container, attach,
// before_create}}.
func encodePrepare(c *Container, attach, beforeCreate bool) []byte {
	return appendMessage(nil, reqPrepare, func(b []byte) []byte {
		b = appendMessage(b, prepContainer, func(b []byte) []byte { return appendContainer(b, c) })
		b = appendBool(b, prepAttach, attach)
		return appendBool(b, prepBeforeCreate, beforeCreate)
	})
}

// encodeBind encodes Request{bind: BindRequest{container_id, pid}}.
func encodeBind(id string, pid int) []byte {
	return appendMessage(nil, reqBind, func(b []byte) []byte {
		b = appendString(b, bindContainerID, id)
		return appendInt32(b, bindPid, int32(pid))
	})
}

// encodeTargets encodes Request{targets: TargetsRequest{container}}.
func encodeTargets(c *Container) []byte {
	return appendMessage(nil, reqTargets, func(b []byte) []byte {
		return appendMessage(b, tgtContainer, func(b []byte) []byte { return appendContainer(b, c) })
	})
}

// encodeRelease encodes Request{release: ReleaseRequest{container_id, pid,
// pid_start, no_reply}}.
func encodeRelease(id string, p Process, noReply bool) []byte {
	return appendMessage(nil, reqRelease, func(b []byte) []byte {
		b = appendString(b, relContainerID, id)
		b = appendInt32(b, relPid, int32(p.Pid))
		b = appendVarint(b, relPidStart, p.Start)
		return appendBool(b, relNoReply, noReply)
	})
}

var errMalformed = errors.New("malformed response")

// reader walks the fields of one encoded message.
type reader struct{ b []byte }

// next returns the next field's number and wire type, its value for
// varints, and its bytes for length-delimited fields. Fixed-width fields
// are skipped over (none of the response's fields uses them).
func (r *reader) next() (field, wire int, v uint64, data []byte, err error) {
	tag, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, 0, 0, nil, errMalformed
	}
	r.b = r.b[n:]
	if tag>>3 == 0 || tag>>3 > math.MaxInt32 {
		return 0, 0, 0, nil, errMalformed
	}
	field, wire = int(tag>>3), int(tag&7)
	switch wire {
	case wireVarint:
		v, n = binary.Uvarint(r.b)
		if n <= 0 {
			return 0, 0, 0, nil, errMalformed
		}
		r.b = r.b[n:]
	case wireLen:
		l, n := binary.Uvarint(r.b)
		if n <= 0 || l > uint64(len(r.b)-n) {
			return 0, 0, 0, nil, errMalformed
		}
		data = r.b[n : n+int(l)]
		r.b = r.b[n+int(l):]
	case wireI64:
		if len(r.b) < 8 {
			return 0, 0, 0, nil, errMalformed
		}
		r.b = r.b[8:]
	case wireI32:
		if len(r.b) < 4 {
			return 0, 0, 0, nil, errMalformed
		}
		r.b = r.b[4:]
	case wireStartGroup:
		// Groups are not proto3, but proto.Unmarshal skips one as an
		// unknown field: so does this reader, nested ones included.
		for {
			f, w, _, _, err := r.next()
			if err != nil {
				return 0, 0, 0, nil, err
			}
			if w == wireEndGroup {
				if f != field {
					return 0, 0, 0, nil, errMalformed
				}
				break
			}
		}
	case wireEndGroup:
		// The end of the group being skipped; its caller checks the field.
	default:
		// Wire types 6 and 7 do not exist.
		return 0, 0, 0, nil, errMalformed
	}
	return field, wire, v, data, nil
}

// field returns the next field of the message; an end of group outside a
// group is malformed.
func (r *reader) field() (field, wire int, v uint64, data []byte, err error) {
	field, wire, v, data, err = r.next()
	if err == nil && wire == wireEndGroup {
		err = errMalformed
	}
	return field, wire, v, data, err
}

// response is the decoded Response: at most one of its results.
type response struct {
	err       *Error
	prepared  bool
	mounts    []Mount
	released  bool
	bound     bool
	targeted  bool
	targets   []string
	hasResult bool
}

// decodeResponse reads an encoded Response. Like proto.Unmarshal, it keeps
// the last of repeated scalar fields, merges repeated message fields, and
// skips fields it does not know (and known fields of another wire type).
func decodeResponse(b []byte) (*response, error) {
	resp := &response{}
	r := reader{b}
	for len(r.b) > 0 {
		field, wire, _, data, err := r.field()
		if err != nil {
			return nil, err
		}
		if wire != wireLen {
			// A known field with another wire type is an unknown field to
			// proto.Unmarshal too.
			continue
		}
		switch field {
		case respError:
			if resp.err == nil {
				resp.err = &Error{}
			}
			if err := decodeError(data, resp.err); err != nil {
				return nil, err
			}
		case respPrepare:
			resp.bound = false
			if !resp.prepared {
				// A oneof switching members starts the new one afresh.
				resp.mounts = nil
			}
			resp.prepared, resp.released, resp.targeted, resp.targets, resp.hasResult = true, false, false, nil, true
			ms, err := decodeMounts(data)
			if err != nil {
				return nil, err
			}
			resp.mounts = append(resp.mounts, ms...)
		case respTargets:
			resp.bound = false
			if !resp.targeted {
				resp.targets = nil
			}
			resp.prepared, resp.released, resp.targeted, resp.mounts, resp.hasResult = false, false, true, nil, true
			ts, err := decodeTargets(data)
			if err != nil {
				return nil, err
			}
			resp.targets = append(resp.targets, ts...)
		case respRelease:
			resp.bound = false
			resp.prepared, resp.released, resp.targeted, resp.hasResult, resp.mounts, resp.targets = false, true, false, true, nil, nil
		case respList:
			// A result, but none the client asks for.
			resp.bound = false
			resp.prepared, resp.released, resp.targeted, resp.hasResult, resp.mounts, resp.targets = false, false, false, true, nil, nil
		case respBind:
			resp.prepared, resp.released, resp.targeted, resp.bound, resp.hasResult, resp.mounts, resp.targets = false, false, false, true, true, nil, nil
		}
	}
	return resp, nil
}

func decodeError(b []byte, e *Error) error {
	r := reader{b}
	for len(r.b) > 0 {
		field, wire, v, data, err := r.field()
		if err != nil {
			return err
		}
		switch {
		case field == errCode && wire == wireVarint:
			e.Code = Code(int32(v))
		case field == errMessage && wire == wireLen:
			e.Message = string(data)
		}
	}
	return nil
}

func decodeMounts(b []byte) ([]Mount, error) {
	var ms []Mount
	r := reader{b}
	for len(r.b) > 0 {
		field, wire, _, data, err := r.field()
		if err != nil {
			return nil, err
		}
		if field != prepMounts || wire != wireLen {
			continue
		}
		m := Mount{}
		mr := reader{data}
		for len(mr.b) > 0 {
			f, w, v, d, err := mr.field()
			if err != nil {
				return nil, err
			}
			switch {
			case f == mpTarget && w == wireLen:
				m.Target = string(d)
			case f == mpFdIndex && w == wireVarint:
				m.FdIndex = int(int32(v))
			}
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func decodeTargets(b []byte) ([]string, error) {
	var ts []string
	r := reader{b}
	for len(r.b) > 0 {
		field, wire, _, data, err := r.field()
		if err != nil {
			return nil, err
		}
		if field == tgtTargets && wire == wireLen {
			ts = append(ts, string(data))
		}
	}
	return ts, nil
}
