package dispatcher

import (
	"bytes"
	"sync"
	"testing"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
)

// oldAgent is the session request of an agent built before claim rules: it
// announces nothing.
func oldAgent(resume uint64) *dapi.SessionRequest {
	return &dapi.SessionRequest{ResumeRevision: resume}
}

// leakStream is a fakeStream that also keeps every byte it was sent, to
// look for secret data in them.
type leakStream struct {
	fakeStream
	mu  sync.Mutex
	raw []byte
}

func (l *leakStream) SendMsg(v any) error {
	data, err := Codec{}.Marshal(v)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.raw = append(l.raw, data.Materialize()...)
	l.mu.Unlock()
	data.Free()
	return l.fakeStream.SendMsg(v)
}

func (l *leakStream) sent(b []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.raw, b)
}

// connectLeak opens a session that sends req and keeps its bytes.
func (h *harness) connectLeak(nodeID string, req *dapi.SessionRequest) (*conn, *leakStream) {
	ls := &leakStream{}
	return h.connectStream(nodeID, req, &ls.fakeStream, ls), ls
}

func ruledSpec(name string, rules []string, secrets ...*types.Secret) *types.ServiceSpec {
	sp := spec(name, nil, secrets...)
	sp.ClaimRules = rules
	return sp
}

// TestOldAgentGetsNoClaimRuledService is the attack: an agent that does not
// enforce claim rules (it announces nothing, as every agent built before
// them) on a node where a claim-ruled service is placed. It must get the
// plain service and its secrets, and neither the claim-ruled service nor
// any byte of the secrets only that service references: in the COMPLETE
// message, in a resume, and when a service it holds gains claim rules (a
// REMOVE). A current agent on the same placement gets everything.
func TestOldAgentGetsNoClaimRuledService(t *testing.T) {
	h := newHarness(t)
	old, cur := h.node("old", nil), h.node("cur", nil)
	shared := h.secret("shared", "shared-data")
	plainOnly := h.secret("plainonly", "plain-data")
	ruledOnly := h.secret("ruledonly", "RULED-ONLY-1")
	rules := []string{"containerd.namespace==prod"}
	plain := h.service("plain", nil, plainOnly, shared)
	if _, err := h.st.CreateService(h.ctx, ruledSpec("ruled", rules, ruledOnly, shared)); err != nil {
		t.Fatal(err)
	}

	co, lo := h.connectLeak(old, oldAgent(0))
	first := co.next()
	expect(t, first, dapi.SessionMessage_COMPLETE, "+secret:shared=shared-data", "+secret:plainonly=plain-data", "+service:plain[plainonly][shared]")
	cc := h.connect(cur, 0)
	expect(t, cc.next(), dapi.SessionMessage_COMPLETE, "+secret:shared=shared-data", "+secret:plainonly=plain-data", "+secret:ruledonly=RULED-ONLY-1",
		"+service:plain[plainonly][shared]", "+service:ruled[ruledonly][shared]")

	// While the old agent is away, another claim-ruled service and a plain
	// one arrive: its resume brings only the plain one.
	co.stop()
	<-co.errc
	ruledOnly2 := h.secret("ruledonly2", "RULED-ONLY-2")
	if _, err := h.st.CreateService(h.ctx, ruledSpec("ruled2", rules, ruledOnly2)); err != nil {
		t.Fatal(err)
	}
	plain2Only := h.secret("plain2only", "plain2-data")
	h.service("plain2", nil, plain2Only)
	expect(t, cc.next(), dapi.SessionMessage_INCREMENTAL, "+secret:ruledonly2=RULED-ONLY-2", "+service:ruled2[ruledonly2]")
	expect(t, cc.next(), dapi.SessionMessage_INCREMENTAL, "+secret:plain2only=plain2-data", "+service:plain2[plain2only]")
	co, lo2 := h.connectLeak(old, oldAgent(first.Revision))
	expect(t, co.next(), dapi.SessionMessage_INCREMENTAL, "+secret:plain2only=plain2-data", "+service:plain2[plain2only]")

	// A service the old agent holds gains claim rules: it is removed, with
	// the secrets only it referenced there.
	if _, err := h.st.UpdateService(h.ctx, plain.Id, plain.Meta.Version, ruledSpec("plain", rules, plainOnly, shared)); err != nil {
		t.Fatal(err)
	}
	expect(t, co.next(), dapi.SessionMessage_INCREMENTAL, "-service:plain", "-secret:plainonly", "-secret:shared")
	expect(t, cc.next(), dapi.SessionMessage_INCREMENTAL, "+service:plain[plainonly][shared]")

	// And one that loses them is added.
	ruled2, err := h.st.GetService(h.ctx, "ruled2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.UpdateService(h.ctx, ruled2.Id, ruled2.Meta.Version, ruledSpec("ruled2", nil, ruledOnly2)); err != nil {
		t.Fatal(err)
	}
	expect(t, co.next(), dapi.SessionMessage_INCREMENTAL, "+secret:ruledonly2=RULED-ONLY-2", "+service:ruled2[ruledonly2]")
	expect(t, cc.next(), dapi.SessionMessage_INCREMENTAL, "+service:ruled2[ruledonly2]")

	// Not a byte of what only the claim-ruled services referenced, nor
	// their rules, reached the old agent (ruled2's secret only once its
	// rules were gone, on the second session).
	never := map[*leakStream][]string{
		lo:  {"RULED-ONLY-1", ruledOnly.Id, "RULED-ONLY-2", ruledOnly2.Id, rules[0]},
		lo2: {"RULED-ONLY-1", ruledOnly.Id, rules[0]},
	}
	for ls, leaks := range never {
		for _, leak := range leaks {
			if ls.sent([]byte(leak)) {
				t.Errorf("the old agent was sent %q", leak)
			}
		}
	}
	co.quiet()
	cc.quiet()
}
