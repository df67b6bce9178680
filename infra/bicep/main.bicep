// mongo-fabric-mirror: Azure Functions (Flex Consumption, Python) mirroring MongoDB Atlas into a
// Microsoft Fabric open-mirroring landing zone in OneLake.
//
// Deploy:  az deployment group create -g <rg> -n mongo-fabric-mirror --parameters infra/bicep/main.bicepparam
// Then:    func azure functionapp publish <functionAppName>
// And grant the identity Contributor on the Fabric workspace (manual; see infra/README.md).

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@description('Short name used in every resource name: 3-8 lower-case letters or digits (no hyphen at either end).')
@minLength(3)
@maxLength(8)
param baseName string = 'mfm'

@description('Azure region of every resource (must offer Flex Consumption; for an Atlas private endpoint, the Atlas cluster region).')
param location string = resourceGroup().location

@description('Tags applied to every resource.')
param tags object = {
  application: 'mongo-fabric-mirror'
}

@description('OneLake landing zone of the Fabric mirrored database: https://onelake.dfs.fabric.microsoft.com/<workspaceId>/<mirroredDatabaseId>/Files/LandingZone')
@minLength(40)
param landingZoneUrl string

@description('The MongoDB connection string (mongodb:// or mongodb+srv://). Stored in Key Vault only; never output.')
@secure()
@minLength(10)
param mongodbUri string

@description('The MongoDB database to mirror.')
@minLength(1)
@maxLength(63)
param mongodbDatabase string

@description('Collections to mirror: all, one name, a comma list or a JSON list ["c1","c2"].')
@minLength(1)
param mongodbCollections string = 'all'

@description('NCRONTAB schedule (six fields, seconds first) of the change-capture timer: each tick fans out the snapshots that are due and streams changes for changeBudgetSeconds. Every minute by default.')
@minLength(11)
param changeSchedule string = '0 * * * * *'

@description('Seconds one timer tick streams change windows. Keep it below the schedule\'s period (an overlapping tick finds the stream leased and does nothing) and well inside host.json\'s functionTimeout (30 minutes).')
@minValue(1)
@maxValue(600)
param changeBudgetSeconds int = 55

@description('Log level of the mirror.')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

@description('Python version of the Functions runtime.')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.13'

@description('Memory of each Flex Consumption instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances the app scales out to. Each instance opens its own MongoDB connections: keep instances x pool size under the Atlas tier\'s connection limit.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Replication of the storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Turn on Key Vault purge protection (irreversible once on).')
param enableKeyVaultPurgeProtection bool = false

@description('Days a deleted Key Vault or secret can be recovered.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 90

@description('Accept only Microsoft Entra authenticated telemetry in Application Insights (the Functions host authenticates with APPLICATIONINSIGHTS_AUTHENTICATION_STRING). Turn off if an in-process exporter without a credential must send telemetry.')
param appInsightsDisableLocalAuth bool = true

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Create a VNet and integrate the function app with it (needed for a MongoDB Atlas private endpoint).')
param enableVnet bool = false

@description('Address space of the VNet (when enableVnet).')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Subnet delegated to Microsoft.App/environments for the function app (when enableVnet).')
param appSubnetPrefix string = '10.40.0.0/24'

@description('Subnet for private endpoints (when enableVnet).')
param privateEndpointSubnetPrefix string = '10.40.1.0/24'

@description('Resource id (or alias) of the MongoDB Atlas private link service shown by Atlas when you add an Azure private endpoint. Empty: no Atlas private endpoint. Setting it creates the VNet even when enableVnet is false.')
param atlasPrivateLinkServiceId string = ''

@description('Name of the Atlas private endpoint: the same name you typed in Atlas.')
@minLength(2)
@maxLength(64)
param atlasPrivateEndpointName string = 'pe-${baseName}-atlas'

@description('Give the app one static outbound public IP (a NAT gateway on its VNet subnet), for a MongoDB IP access list such as the one of Atlas. Flex Consumption has no fixed outbound address otherwise. Turning it on creates the VNet even when enableVnet is false.')
param enableNatGateway bool = false

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var suffix = uniqueString(subscription().id, resourceGroup().id, baseName)
var names = {
  identity: 'id-${baseName}-${suffix}'
  storage: toLower('st${replace(baseName, '-', '')}${suffix}')
  keyVault: 'kv-${baseName}-${take(suffix, 12)}'
  logAnalytics: 'log-${baseName}-${suffix}'
  appInsights: 'appi-${baseName}-${suffix}'
  plan: 'plan-${baseName}-${suffix}'
  functionApp: 'func-${baseName}-${suffix}'
  vnet: 'vnet-${baseName}-${suffix}'
  natGateway: 'ng-${baseName}-${suffix}'
}
// An Atlas private endpoint and a NAT gateway need the VNet, so asking for one turns the VNet on.
var deployNetwork = enableVnet || enableNatGateway || !empty(atlasPrivateLinkServiceId)
var deploymentContainerName = 'app-package'
var partitionQueueName = 'snapshot-partitions'
var stateTableName = 'mirrorstate'
var mongodbUriSecretName = 'mongodb-uri'

// ---------------------------------------------------------------------------------------------
// Identity: one user-assigned identity for storage, Key Vault, telemetry and OneLake
// ---------------------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    retentionInDays: logRetentionInDays
    disableLocalAuth: appInsightsDisableLocalAuth
    identityResourceId: identity.id
    identityPrincipalId: identity.properties.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    storageAccountName: names.storage
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    partitionQueueName: partitionQueueName
    stateTableName: stateTableName
    identityResourceId: identity.id
    identityPrincipalId: identity.properties.principalId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    tags: tags
    keyVaultName: names.keyVault
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    enablePurgeProtection: enableKeyVaultPurgeProtection
    mongodbUriSecretName: mongodbUriSecretName
    mongodbUri: mongodbUri
    identityResourceId: identity.id
    identityPrincipalId: identity.properties.principalId
  }
}

module network 'modules/network.bicep' = if (deployNetwork) {
  name: 'network'
  params: {
    location: location
    tags: tags
    vnetName: names.vnet
    vnetAddressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    atlasPrivateLinkServiceId: atlasPrivateLinkServiceId
    atlasPrivateEndpointName: atlasPrivateEndpointName
    enableNatGateway: enableNatGateway
    natGatewayName: names.natGateway
  }
}

// The settings shared/config.py reads. AZURE_TENANT_ID and AZURE_CLIENT_SECRET are for
// service-principal authentication only and are deliberately absent: the app uses its identity.
var mirrorSettings = {
  LANDING_ZONE: landingZoneUrl
  STATE_STORE: storage.outputs.stateStoreUrl
  AZURE_AUTH: 'managed-identity'
  AZURE_CLIENT_ID: identity.properties.clientId
  MONGODB_URI: keyVault.outputs.mongodbUriAppSetting // @Microsoft.KeyVault(SecretUri=...)
  MONGODB_DATABASE: mongodbDatabase
  MONGODB_COLLECTIONS: mongodbCollections
  LOG_LEVEL: logLevel
  // The timer's binding reads CHANGE_SCHEDULE itself (%CHANGE_SCHEDULE%): it must be an app setting.
  CHANGE_SCHEDULE: changeSchedule
  CHANGE_BUDGET_SECONDS: string(changeBudgetSeconds)
  // The replicator's own per-table status (GET /api/status): ids taken from the landing-zone URL.
  FABRIC_WORKSPACE_ID: split(landingZoneUrl, '/')[3]
  FABRIC_ITEM_ID: split(landingZoneUrl, '/')[4]
}

// Module outputs used below give the function app implicit dependencies on the storage, Key Vault
// and monitoring modules, role assignments included: the host starts with its permissions granted.
module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: tags
    planName: names.plan
    functionAppName: names.functionApp
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    identityResourceId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.storageAccountName
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    virtualNetworkSubnetId: deployNetwork ? network.outputs.appSubnetId : ''
    mirrorSettings: mirrorSettings
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (no secrets)
// ---------------------------------------------------------------------------------------------

@description('Name of the function app: func azure functionapp publish <this>.')
output functionAppName string = functionApp.outputs.functionAppName

@description('Default host name of the function app.')
output functionAppDefaultHostName string = functionApp.outputs.defaultHostName

@description('Object id of the identity: add it as Contributor on the Fabric workspace.')
output identityPrincipalId string = identity.properties.principalId

@description('Client (application) id of the identity (AZURE_CLIENT_ID).')
output identityClientId string = identity.properties.clientId

@description('Name of the identity, as it appears in Fabric\'s "Manage access" search.')
output identityName string = identity.name

output storageAccountName string = storage.outputs.storageAccountName
output keyVaultName string = keyVault.outputs.keyVaultName
output stateStore string = storage.outputs.stateStoreUrl

@description('Atlas private endpoint resource id and private IP to register in Atlas; empty when none.')
output atlasPrivateEndpointId string = deployNetwork ? network.outputs.atlasPrivateEndpointId : ''
output atlasPrivateEndpointIp string = deployNetwork ? network.outputs.atlasPrivateEndpointIp : ''

@description('Static outbound IP of the app for the Atlas IP access list (enableNatGateway); empty otherwise.')
output outboundIpAddress string = deployNetwork ? network.outputs.outboundIpAddress : ''
