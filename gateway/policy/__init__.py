"""Policy: rules, profiles, guard rails, decisions."""
