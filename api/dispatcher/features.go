package dispatcher

// AgentFeatures is what this build's agent enforces: every session it
// opens announces them (SessionRequest.features). An agent lists a feature
// here only once its code enforces it; managers withhold the services
// that need a feature from a session that does not announce it.
func AgentFeatures() []AgentFeature {
	return []AgentFeature{
		AgentFeature_AGENT_FEATURE_CLAIM_RULES,
		AgentFeature_AGENT_FEATURE_LIVE_UPDATE,
	}
}

// Announces reports whether the session request announces f.
func (x *SessionRequest) Announces(f AgentFeature) bool {
	for _, g := range x.GetFeatures() {
		if g == f {
			return true
		}
	}
	return false
}
