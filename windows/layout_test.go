package windows

import (
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/mounter"
)

func TestCheckPlan(t *testing.T) {
	good := func() *mounter.Plan {
		p, err := mounter.NewPlan(mounter.Windows, []mounter.Grant{
			{SecretID: "abc", SecretName: "db", Size: 3},
			{SecretID: "abc", SecretName: "db", Target: `C:\app\db`, Size: 3},
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := checkPlan(good()); err != nil {
		t.Fatalf("checkPlan(NewPlan(...)): %v", err)
	}
	tests := []struct {
		name   string
		change func(*mounter.Plan) *mounter.Plan
		err    string
	}{
		{"nil", func(*mounter.Plan) *mounter.Plan { return nil }, "no plan"},
		{"linux", func(p *mounter.Plan) *mounter.Plan { p.OS = mounter.Linux; return p }, "not windows"},
		{"name with a separator", func(p *mounter.Plan) *mounter.Plan { p.Files[0].Name = `..\x`; return p }, "not a plain"},
		{"dot name", func(p *mounter.Plan) *mounter.Plan { p.Files[0].Name = `.x`; return p }, "not a plain"},
		{"device name", func(p *mounter.Plan) *mounter.Plan { p.Files[0].Name = `nul`; return p }, "not a plain"},
		{"empty name", func(p *mounter.Plan) *mounter.Plan { p.Files[0].Name = ``; return p }, "not a plain"},
		{"twice", func(p *mounter.Plan) *mounter.Plan { p.Files[1].Name = "ABC"; return p }, "appears twice"},
		{"relative target", func(p *mounter.Plan) *mounter.Plan { p.Files[0].Target = `x`; return p }, "not a resolved"},
		{"unclean target", func(p *mounter.Plan) *mounter.Plan { p.Files[0].Target = `C:\a\..\b`; return p }, "not a resolved"},
		{"internal target", func(p *mounter.Plan) *mounter.Plan {
			p.Files[0].Target = mounter.WindowsInternalSecretsDir + `\x`
			return p
		}, "not a resolved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPlan(tt.change(good()))
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("checkPlan = %v, want an error with %q", err, tt.err)
			}
		})
	}
}

func TestTargetElemsAndLink(t *testing.T) {
	f := mounter.File{Name: "abc~2", Target: `C:\ProgramData\Docker\secrets\db`}
	if got := strings.Join(targetElems(f.Target), "|"); got != "ProgramData|Docker|secrets|db" {
		t.Fatalf("targetElems = %q", got)
	}
	if got := linkTarget(f); got != `C:\ProgramData\Docker\internal\secrets\abc~2` {
		t.Fatalf("linkTarget = %q", got)
	}
}

func TestCheckContainerID(t *testing.T) {
	for _, id := range []string{"a", "0123abc", "my-ctr_1.x", strings.Repeat("a", 256)} {
		if err := checkContainerID(id); err != nil {
			t.Errorf("checkContainerID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", "a b", "a\nb", "a\x00", strings.Repeat("a", 257)} {
		if checkContainerID(id) == nil {
			t.Errorf("checkContainerID(%q) accepted it", id)
		}
	}
}

func TestCheckPrivateDACL(t *testing.T) {
	tests := []struct {
		sddl string
		err  string
	}{
		{sddl: privateSDDL},
		{sddl: "O:SYG:SYD:PAI(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)"},
		{sddl: "D:P(A;;FA;;;BA)(A;OICIIO;GA;;;BA)(A;;FA;;;SY)(A;OICIIO;GA;;;SY)"},
		{sddl: "D:P(A;OICI;FA;;;S-1-5-32-544)(A;OICI;FA;;;S-1-5-18)S:(AU;SA;FA;;;WD)"},
		{sddl: "D:P(D;;FA;;;WD)(A;;FA;;;BA)(A;;FA;;;SY)"},
		{sddl: "D:(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)", err: "not protected"},
		{sddl: "D:AI(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)", err: "not protected"},
		{sddl: "D:P(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;;0x1200a9;;;WD)", err: "allows WD"},
		{sddl: "D:P(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;OICI;FR;;;BU)", err: "allows BU"},
		{sddl: "D:P(A;OICI;FA;;;BA)", err: "both"},
		{sddl: "D:P", err: "malformed"},
		{sddl: "O:BA", err: "no DACL"},
	}
	for _, tt := range tests {
		err := checkPrivateDACL(tt.sddl)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("checkPrivateDACL(%q) = %v, want %q", tt.sddl, err, tt.err)
		}
	}
}

// TestIndex: files.json gives back what was written, and refuses names
// and targets a Mount never writes (a name that climbs out of files\ would
// be opened and replaced by a live update).
func TestIndex(t *testing.T) {
	plan, err := mounter.NewPlan(mounter.Windows, []mounter.Grant{
		{SecretID: "abc", SecretName: "db", Size: 3},
		{SecretID: "abc", SecretName: "db", Target: `C:\app\db`, Size: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	removed := map[string]string{`C:\old`: "xyz"}
	b, err := encodeIndex(plan.Files, removed)
	if err != nil {
		t.Fatal(err)
	}
	got, gotRemoved, err := decodeIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotRemoved) != 1 || gotRemoved[`C:\old`] != "xyz" {
		t.Errorf("removed %v, want %v", gotRemoved, removed)
	}
	for i, f := range plan.Files {
		f.Signal = "" // the agent's, not the mounter's
		if got[i] != f {
			t.Errorf("file %d: %+v, want %+v", i, got[i], f)
		}
	}
	if empty, _, err := decodeIndex([]byte(`{"files":[]}`)); err != nil || empty == nil || len(empty) != 0 {
		t.Errorf("empty index: %v, %v; want no files (not unknown)", empty, err)
	}
	for _, tc := range []struct{ name, json, err string }{
		{"climbs out", `{"files":[{"target":"C:\\a","name":"..\\..\\x"}]}`, "not a plain Windows name"},
		{"separator", `{"files":[{"target":"C:\\a","name":"a\\b"}]}`, "not a plain Windows name"},
		{"hidden", `{"files":[{"target":"C:\\a","name":".x"}]}`, "not a plain Windows name"},
		{"device", `{"files":[{"target":"C:\\a","name":"NUL"}]}`, "not a plain Windows name"},
		{"unresolved target", `{"files":[{"target":"a","name":"x"}]}`, "not a resolved Windows target"},
		{"other drive", `{"files":[{"target":"D:\\a","name":"x"}]}`, "not a resolved Windows target"},
		{"removed climbs out", `{"files":[],"removed":{"C:\\a":"..\\x"}}`, "not a plain Windows name"},
		{"removed target", `{"files":[],"removed":{"\\\\srv\\x":"x"}}`, "not a resolved Windows target"},
		{"not json", `{`, indexFileName},
	} {
		if _, _, err := decodeIndex([]byte(tc.json)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}
