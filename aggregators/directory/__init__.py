"""The organization directory: the voice.organizations topic into voicemon.organizations."""
