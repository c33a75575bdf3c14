package grants

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/mounter"
)

func secret(id, name, data string) *dispatcher.AssignmentChange {
	return &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Secret{
		Secret: &dispatcher.SecretData{Id: id, Name: name, Data: []byte(data)}}}}
}

func service(id, name string, secretIDs ...string) *dispatcher.AssignmentChange {
	sg := &dispatcher.ServiceGrants{ServiceId: id, ServiceName: name}
	for _, s := range secretIDs {
		sg.Grants = append(sg.Grants, &dispatcher.Grant{SecretId: s, SecretName: "n" + s, Target: &types.FileTarget{Name: "t" + s, Uid: "1", Gid: "2", Mode: 0o400}})
	}
	return &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Service{Service: sg}}}
}

func remove(ch *dispatcher.AssignmentChange) *dispatcher.AssignmentChange {
	ch.Action = dispatcher.AssignmentChange_REMOVE
	return ch
}

func complete(rev uint64, chs ...*dispatcher.AssignmentChange) *dispatcher.SessionMessage {
	return &dispatcher.SessionMessage{Type: dispatcher.SessionMessage_COMPLETE, Revision: rev, Changes: chs}
}

func incremental(rev uint64, chs ...*dispatcher.AssignmentChange) *dispatcher.SessionMessage {
	return &dispatcher.SessionMessage{Type: dispatcher.SessionMessage_INCREMENTAL, Revision: rev, Changes: chs}
}

// summary is a State reduced to what the tables compare.
type summary struct {
	Rev      uint64
	Services map[string][]string // name -> secret IDs
	Secrets  []string
}

func summarize(s State) summary {
	out := summary{Rev: s.Revision, Services: map[string][]string{}}
	for _, svc := range s.Services {
		ids := []string{}
		for _, g := range svc.Grants {
			ids = append(ids, g.SecretID)
		}
		out.Services[svc.Name] = ids
	}
	out.Secrets = slices.Sorted(maps.Keys(s.Secrets))
	if out.Secrets == nil {
		out.Secrets = []string{}
	}
	return out
}

func loadIDs(d Diff) []string {
	ids := []string{}
	for _, s := range d.Load {
		ids = append(ids, s.GetId())
	}
	slices.Sort(ids)
	return ids
}

func TestReconcile(t *testing.T) {
	// base holds web -> {s1, s2}, db -> {s3} at revision 10.
	base := func(t *testing.T) State {
		st, _, err := Reconcile(State{}, complete(10,
			secret("s1", "a", "A"), secret("s2", "b", "B"), secret("s3", "c", "C"),
			service("w", "web", "s1", "s2"), service("d", "db", "s3")))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	tests := []struct {
		name     string
		msg      *dispatcher.SessionMessage
		want     summary
		wantLoad []string
		wantDrop []string
		wantErr  bool
	}{
		{
			name:     "complete resets",
			msg:      complete(20, secret("s9", "z", "Z"), service("x", "new", "s9")),
			want:     summary{Rev: 20, Services: map[string][]string{"new": {"s9"}}, Secrets: []string{"s9"}},
			wantLoad: []string{"s9"},
			wantDrop: []string{"s1", "s2", "s3"},
		},
		{
			name:     "empty complete drops everything",
			msg:      complete(11),
			want:     summary{Rev: 11, Services: map[string][]string{}, Secrets: []string{}},
			wantLoad: []string{},
			wantDrop: []string{"s1", "s2", "s3"},
		},
		{
			name:     "complete resends held secrets: replaced",
			msg:      complete(12, secret("s1", "a", "A"), service("w", "web", "s1")),
			want:     summary{Rev: 12, Services: map[string][]string{"web": {"s1"}}, Secrets: []string{"s1"}},
			wantLoad: []string{"s1"},
			wantDrop: []string{"s1", "s2", "s3"},
		},
		{
			name:     "incremental adds a service",
			msg:      incremental(11, secret("s4", "d", "D"), service("q", "queue", "s4", "s1")),
			want:     summary{Rev: 11, Services: map[string][]string{"web": {"s1", "s2"}, "db": {"s3"}, "queue": {"s4", "s1"}}, Secrets: []string{"s1", "s2", "s3", "s4"}},
			wantLoad: []string{"s4"},
			wantDrop: nil,
		},
		{
			name:     "reference removed: its secret leaves",
			msg:      incremental(11, service("w", "web", "s1"), remove(secret("s2", "b", ""))),
			want:     summary{Rev: 11, Services: map[string][]string{"web": {"s1"}, "db": {"s3"}}, Secrets: []string{"s1", "s3"}},
			wantLoad: []string{},
			wantDrop: []string{"s2"},
		},
		{
			name:     "reference removed without the secret's REMOVE: dropped all the same",
			msg:      incremental(11, service("w", "web", "s1")),
			want:     summary{Rev: 11, Services: map[string][]string{"web": {"s1"}, "db": {"s3"}}, Secrets: []string{"s1", "s3"}},
			wantLoad: []string{},
			wantDrop: []string{"s2"},
		},
		{
			name:     "service removed",
			msg:      incremental(11, remove(service("d", "", ""))),
			want:     summary{Rev: 11, Services: map[string][]string{"web": {"s1", "s2"}}, Secrets: []string{"s1", "s2"}},
			wantLoad: []string{},
			wantDrop: []string{"s3"},
		},
		{
			name:     "secret without a grant is not held",
			msg:      incremental(11, secret("s8", "orphan", "O")),
			want:     summary{Rev: 11, Services: map[string][]string{"web": {"s1", "s2"}, "db": {"s3"}}, Secrets: []string{"s1", "s2", "s3"}},
			wantLoad: []string{},
		},
		{
			name:     "add then remove in one message",
			msg:      incremental(11, secret("s4", "d", "D"), service("q", "queue", "s4"), remove(secret("s4", "d", ""))),
			want:     summary{Rev: 11, Services: map[string][]string{"web": {"s1", "s2"}, "db": {"s3"}, "queue": {"s4"}}, Secrets: []string{"s1", "s2", "s3"}},
			wantLoad: []string{},
		},
		{
			name:     "same revision is accepted (idempotent replay)",
			msg:      incremental(10),
			want:     summary{Rev: 10, Services: map[string][]string{"web": {"s1", "s2"}, "db": {"s3"}}, Secrets: []string{"s1", "s2", "s3"}},
			wantLoad: []string{},
		},
		{name: "stale incremental", msg: incremental(9), wantErr: true},
		{name: "remove in complete", msg: complete(11, remove(service("w", "web"))), wantErr: true},
		{name: "secret without id", msg: incremental(11, secret("", "x", "X")), wantErr: true},
		{name: "empty secret", msg: incremental(11, secret("s5", "x", "")), wantErr: true},
		{name: "oversized secret", msg: incremental(11, secret("s5", "x", string(make([]byte, mounter.MaxSecretSize)))), wantErr: true},
		{name: "service without id", msg: incremental(11, service("", "x")), wantErr: true},
		{name: "service without name", msg: incremental(11, service("x", "")), wantErr: true},
		{name: "grant without secret id", msg: incremental(11, service("x", "y", "")), wantErr: true},
		{name: "two services, one name", msg: incremental(11, service("x", "web")), wantErr: true},
		{name: "empty assignment", msg: incremental(11, &dispatcher.AssignmentChange{}), wantErr: true},
		{name: "unknown type", msg: &dispatcher.SessionMessage{Type: 7, Revision: 11}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := base(t)
			before := summarize(cur)
			next, diff, err := Reconcile(cur, tt.msg)
			if got := summarize(cur); !reflect.DeepEqual(got, before) {
				t.Fatalf("Reconcile modified its input: %+v -> %+v", before, got)
			}
			if tt.wantErr {
				var re *ReconcileError
				if !errors.As(err, &re) {
					t.Fatalf("want *ReconcileError, got %v", err)
				}
				if len(diff.Load)+len(diff.Drop) != 0 {
					t.Errorf("diff on error: %+v", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := summarize(next); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("state\n got %+v\nwant %+v", got, tt.want)
			}
			if tt.wantLoad == nil {
				tt.wantLoad = []string{}
			}
			if got := loadIDs(diff); !reflect.DeepEqual(got, tt.wantLoad) {
				t.Errorf("load %v, want %v", got, tt.wantLoad)
			}
			if !reflect.DeepEqual(diff.Drop, tt.wantDrop) {
				t.Errorf("drop %v, want %v", diff.Drop, tt.wantDrop)
			}
		})
	}
}

func TestReconcileKeepsTargets(t *testing.T) {
	st, _, err := Reconcile(State{}, complete(1, secret("s1", "a", "A"), service("w", "web", "s1")))
	if err != nil {
		t.Fatal(err)
	}
	got := st.Services["w"].Grants[0]
	want := mounter.Grant{SecretID: "s1", SecretName: "ns1", Target: "ts1", UID: "1", GID: "2", Mode: 0o400}
	if got != want {
		t.Errorf("grant %+v, want %+v", got, want)
	}
	if st.Secrets["s1"] != (SecretMeta{Name: "a", Size: 1}) {
		t.Errorf("secret meta %+v", st.Secrets["s1"])
	}
}

func FuzzReconcile(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3}, uint64(5), true)
	f.Fuzz(func(t *testing.T, ops []byte, rev uint64, full bool) {
		// Build a message from ops: each byte picks an action, a kind and
		// an ID from a small set, so collisions are frequent.
		typ := dispatcher.SessionMessage_INCREMENTAL
		if full {
			typ = dispatcher.SessionMessage_COMPLETE
		}
		msg := &dispatcher.SessionMessage{Type: typ, Revision: rev}
		for _, b := range ops {
			id := string(rune('a' + b%4))
			var ch *dispatcher.AssignmentChange
			if b&0x10 != 0 {
				ch = secret(id, "n"+id, "data")
			} else {
				ch = service("svc"+id, "name"+id, string(rune('a'+(b>>5)%4)))
			}
			if b&0x80 != 0 {
				ch = remove(ch)
			}
			msg.Changes = append(msg.Changes, ch)
		}
		cur, _, err := Reconcile(State{}, complete(1, secret("a", "na", "x"), service("svca", "namea", "a")))
		if err != nil {
			t.Fatal(err)
		}
		next, diff, err := Reconcile(cur, msg)
		if err != nil {
			return
		}
		// Invariants: every held secret is referenced; every load is held;
		// a dropped secret was held before.
		ref := map[string]bool{}
		for _, svc := range next.Services {
			for _, g := range svc.Grants {
				ref[g.SecretID] = true
			}
		}
		for id := range next.Secrets {
			if !ref[id] {
				t.Errorf("secret %s held without a grant", id)
			}
		}
		for _, s := range diff.Load {
			if _, ok := next.Secrets[s.GetId()]; !ok {
				t.Errorf("load of %s which is not held", s.GetId())
			}
		}
		for _, id := range diff.Drop {
			if _, ok := cur.Secrets[id]; !ok {
				t.Errorf("drop of %s which was not held", id)
			}
		}
	})
}
