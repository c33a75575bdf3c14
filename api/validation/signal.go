package validation

import (
	"fmt"
	"strconv"
	"strings"
)

// linuxSignals are the signal numbers of Linux on amd64 and arm64, the
// platforms a live update signals on. They are spelled out rather than
// taken from syscall so that managers on any platform validate the same
// way, and so that this package stays standard-library only and portable.
var linuxSignals = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6,
	"BUS": 7, "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12,
	"PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18,
	"STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24,
	"XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29,
	"PWR": 30, "SYS": 31,
}

// sigRTMin and sigRTMax bound the real-time signals as the container's libc
// sees them (glibc and musl reserve 32-34), named RTMIN+n and RTMAX-n as in
// moby/sys/signal.
const (
	sigRTMin = 34
	sigRTMax = 64
)

// ParseSignal reads a live update's signal as Docker's --stop-signal reads
// one: a name with or without "SIG" ("SIGHUP", "hup"), "RTMIN+n", or a number
// from 1 to 64. It returns the signal's number on Linux. KILL and STOP are
// refused: a live update tells a process its files changed, it does not end
// or freeze it.
func ParseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > sigRTMax {
			return 0, fmt.Errorf("invalid signal: %s", s)
		}
		return refuseFatal(s, n)
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if n, ok := linuxSignals[name]; ok {
		return refuseFatal(s, n)
	}
	for _, rt := range []struct {
		prefix string
		base   int
		sign   int
	}{{"RTMIN+", sigRTMin, 1}, {"RTMAX-", sigRTMax, -1}} {
		if off, ok := strings.CutPrefix(name, rt.prefix); ok {
			d, err := strconv.Atoi(off)
			if err == nil && d >= 0 && d <= sigRTMax-sigRTMin {
				return rt.base + rt.sign*d, nil
			}
		}
	}
	switch name {
	case "RTMIN":
		return sigRTMin, nil
	case "RTMAX":
		return sigRTMax, nil
	}
	return 0, fmt.Errorf("invalid signal: %s", s)
}

func refuseFatal(s string, n int) (int, error) {
	if n == linuxSignals["KILL"] || n == linuxSignals["STOP"] {
		return 0, fmt.Errorf("invalid signal: %s: a live update may not kill or stop the container", s)
	}
	return n, nil
}
