package windows

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf16"
)

func TestParseBitLockerOutput(t *testing.T) {
	tests := []struct {
		out       string
		protected bool
		err       string
	}{
		{out: "status=1\r\n", protected: true},
		{out: "status=0\r\n"},
		{out: "absent\n"},
		{out: "cimerror=3\r\n"},
		{out: "status=2", err: "locked"},
		{out: "cimerror=2", err: "native error code 2"},
		{out: "status=7", err: "unexpected"},
		{out: "status=", err: "unexpected"},
		{out: "", err: "unexpected"},
		{out: "Get-CimInstance : Access denied", err: "unexpected"},
	}
	for _, tt := range tests {
		got, err := parseBitLockerOutput(tt.out)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseBitLockerOutput(%q) = %v, %v; want an error with %q", tt.out, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.protected {
			t.Errorf("parseBitLockerOutput(%q) = %v, %v; want %v", tt.out, got, err, tt.protected)
		}
	}
}

func TestEncodePowerShell(t *testing.T) {
	enc := encodePowerShell("'é' + $x")
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(b)%2 != 0 {
		t.Fatalf("decode %q: %v", enc, err)
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
	}
	if got := string(utf16.Decode(u)); got != "'é' + $x" {
		t.Fatalf("round trip = %q", got)
	}
}

func FuzzParseBitLockerOutput(f *testing.F) {
	for _, s := range []string{"status=1", "absent", "cimerror=3", "status=-1", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		protected, err := parseBitLockerOutput(out)
		if protected && (err != nil || strings.TrimSpace(out) != "status=1") {
			t.Fatalf("parseBitLockerOutput(%q) = protected, %v", out, err)
		}
	})
}
