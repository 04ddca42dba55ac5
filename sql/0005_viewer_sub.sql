-- Signals: a viewer sends as one of its own streams. With auth on, that is a stream
-- opened with the same token subject, and the instance taking the signal may not be the
-- one holding the stream, so the subject is kept beside the viewer. Nullable (auth off,
-- and rows written by code that predates it): expand only.

ALTER TABLE viewers ADD COLUMN sub text;
