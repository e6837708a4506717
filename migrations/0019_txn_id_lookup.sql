-- Events served to the device that sent them carry the client's transaction ID
-- (`unsigned.transaction_id`, how clients match their local echo): looked up by event.
CREATE INDEX event_txn_ids_event_idx ON event_txn_ids (event_nid);
