-- late_findings (migration 0010) has no agent_id and no RLS, yet the tenant role could read and
-- update it: any agency's request could see every live call's control URL, or mark another
-- agency's owed finding as said. Nothing acting as the tenant role touches it (the tool-calls
-- webhook and the tool jobs' writer claim rows on the owner's connection, after their tenant
-- transactions; prune_jobs runs as the owner), so the tenant role loses every privilege on it
-- rather than gain a policy it does not need (issue 21).
REVOKE ALL ON late_findings FROM agent_meter_tenant;
