package dispatcher

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// HasUnknownFields reports whether m, or any message inside it, carries
// fields this build does not know: what a newer peer added. The agent
// refuses every claim of a service that arrives with such fields
// (agent/grants), since one may restrict who may claim it; the
// dispatcher's tests check that what a manager sends a current agent has
// none.
func HasUnknownFields(m proto.Message) bool {
	if m == nil {
		return false
	}
	return unknownIn(m.ProtoReflect())
}

func unknownIn(m protoreflect.Message) bool {
	if !m.IsValid() {
		return false
	}
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			l := v.List()
			for i := 0; i < l.Len() && !found; i++ {
				found = unknownIn(l.Get(i).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				found = unknownIn(mv.Message())
				return !found
			})
		case fd.Message() != nil:
			found = unknownIn(v.Message())
		}
		return !found
	})
	return found
}
