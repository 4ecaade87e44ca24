// removed once host has real sources
